"""pneumo demo: two models side by side on a pediatric chest X-ray, with Grad-CAM.

    python app.py [--cnn-lstm REF] [--resnet50 REF] [--port 7860] [--share]

REF is a model folder or a Hub repo `OWNER/NAME[@REVISION]` (default: the bundled models/ folders, or
the PNEUMO_CNN_LSTM_MODEL / PNEUMO_RESNET50_MODEL environment variables).
"""

from __future__ import annotations

import argparse

import gradio as gr

from pneumo import PneumoError
from pneumo.demo import REPO_ROOT, analyse, compare, load_demo_predictors, model_references, model_summary

EXAMPLES = sorted(str(path) for path in (REPO_ROOT / "examples").glob("*.jpeg"))
DISCLAIMER = ("Research and teaching software, **not a medical device**: never use it to diagnose or treat. "
              "Trained on pediatric X-rays (ages 1-5) from one hospital.")
UPLOAD_TYPES = [".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm"]


def user_errors_as_gradio_errors(function):
    """A bad upload becomes a message on the page; the app keeps serving."""
    def wrapped(*args):
        if not args or not args[0]:
            raise gr.Error("Upload a chest X-ray first (JPEG, PNG, BMP, TIFF or DICOM).")
        try:
            return function(*args)
        except PneumoError as error:
            raise gr.Error(str(error)) from None
    wrapped.__name__ = function.__name__
    return wrapped


def build_app(predictors) -> gr.Blocks:
    names = list(predictors)

    @user_errors_as_gradio_errors
    def run_compare(path):
        summary, overlays = compare(predictors, path)
        banner = ("Both models agree." if summary["agree"] else
                  "**The models disagree** on this image: treat both answers with caution.")
        outputs = [banner]
        for name in names:
            result = summary["models"][name]
            outputs += [result["probabilities"], overlays[name], result]
        return [*outputs, summary]

    @user_errors_as_gradio_errors
    def run_predict(path, model_name, explain_class):
        result, overlay = analyse(predictors[model_name], path, explain_class or None)
        return result["probabilities"], overlay, result

    with gr.Blocks(title="pneumo: pneumonia on chest X-rays") as demo:
        gr.Markdown("# pneumo: pneumonia on pediatric chest X-rays\n" + DISCLAIMER)
        with gr.Tab("Compare"):
            upload = gr.File(label="Chest X-ray", file_types=UPLOAD_TYPES, type="filepath")
            gr.Examples(EXAMPLES, inputs=upload)
            button = gr.Button("Compare both models", variant="primary")
            banner = gr.Markdown()
            outputs = [banner]
            with gr.Row():
                for name in names:
                    with gr.Column():
                        gr.Markdown(f"### {name}")
                        outputs += [gr.Label(label="Calibrated probabilities"),
                                    gr.Image(label="Grad-CAM", type="numpy"),
                                    gr.JSON(label="Details")]
            everything = gr.JSON(visible=False)
            button.click(run_compare, upload, [*outputs, everything], api_name="compare")
        for index, name in enumerate(names):
            with gr.Tab(name):
                model_upload = gr.File(label="Chest X-ray", file_types=UPLOAD_TYPES, type="filepath")
                gr.Examples(EXAMPLES, inputs=model_upload)
                model_name = gr.Dropdown(names, value=name, label="Model", visible=False)
                explain = gr.Radio(predictors[name].class_names, value=None,
                                   label="Heatmap explains (default: the predicted class)")
                model_button = gr.Button(f"Run {name}", variant="primary")
                with gr.Row():
                    label = gr.Label(label="Calibrated probabilities")
                    overlay = gr.Image(label="Grad-CAM", type="numpy")
                details = gr.JSON(label="Details")
                model_button.click(run_predict, [model_upload, model_name, explain], [label, overlay, details],
                                   api_name="predict" if index == 0 else f"predict_{index}",
                                   api_visibility="public" if index == 0 else "undocumented")
        with gr.Tab("About"):
            gr.Markdown("\n\n".join(model_summary(p) for p in predictors.values()))
            gr.Markdown("Metrics are read from each model folder (`metrics_validation.json`, `metrics_test.json`). "
                        "The threshold and the calibration temperature were fitted on a patient-level "
                        "validation split of the training data.\n\n" + DISCLAIMER)
    return demo.queue(max_size=32, default_concurrency_limit=2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cnn-lstm", help="model reference for the CNN+LSTM")
    parser.add_argument("--resnet50", help="model reference for the ResNet50")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="ask Gradio for a public link")
    args = parser.parse_args(argv)
    try:
        predictors = load_demo_predictors(model_references({"CNN+LSTM": args.cnn_lstm, "ResNet50": args.resnet50}))
    except PneumoError as error:
        raise SystemExit(f"pneumo: {error}") from None
    app = build_app(predictors)
    try:
        app.launch(server_name=args.host, server_port=args.port, share=args.share)
    except Exception as error:  # no internet: the share tunnel cannot open
        if not args.share:
            raise
        print(f"pneumo: no public link ({error}); serving locally on http://{args.host}:{args.port}")
        app.launch(server_name=args.host, server_port=args.port, share=False)


if __name__ == "__main__":
    main()
