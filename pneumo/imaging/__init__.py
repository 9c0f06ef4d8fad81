"""Images in: a file (JPEG, PNG, BMP, TIFF or DICOM) decoded, validated and preprocessed for a model, by one path
(`decoding`) that training, the demo and batch scoring share; compressed DICOM is decoded in a worker process
(`dicom_worker`)."""

from .decoding import DecodedFile, Preprocessing, load_model_input, read_grayscale

__all__ = ["DecodedFile", "Preprocessing", "load_model_input", "read_grayscale"]
