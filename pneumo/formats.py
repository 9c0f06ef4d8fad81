"""The file formats pneumo reads, named once for messages, upload boxes and folder listings."""

SUPPORTED_FORMATS_TEXT = "JPEG, PNG, BMP, TIFF or DICOM"
SUPPORTED_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")
