"""The Gradio demo's library (app.py lays out the page): what the page shows (`panels`), verdicts in words
(`verdicts`), the PDF report (`pdf_report`) and the files served to a browser (`served_files`)."""
