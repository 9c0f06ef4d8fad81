"""The Gradio demo's library (app.py lays out the page): the request handlers (`handlers`), what the page shows
(`panels`, `about`), verdicts in words (`verdicts`), the PDF report (`pdf_report`), the files served to a browser
(`served_files`), the networks loaded behind the page (`network_loader`) and what serving on a small machine needs
(`server`)."""
