"""pneumo demo: two models side by side on a pediatric chest X-ray, with Grad-CAM and a PDF report.

    python app.py [--cnn-lstm REF] [--resnet50 REF] [--host 127.0.0.1] [--port 7860] [--share]

REF is a model folder or a Hub repo `OWNER/NAME[@REVISION]`; the defaults are the bundled models/
folders, or the PNEUMO_CNN_LSTM_MODEL / PNEUMO_RESNET50_MODEL environment variables.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import tempfile
import threading
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

from pneumo import PneumoError  # noqa: E402
from pneumo.bundled import REPO_ROOT, model_references  # noqa: E402
from pneumo.demo import analyse, compare, load_demo_predictors, model_summary, report  # noqa: E402
from pneumo.formats import SUPPORTED_FORMATS_TEXT, SUPPORTED_SUFFIXES  # noqa: E402
from pneumo.imaging import MAX_FILE_BYTES  # noqa: E402
from pneumo.ood import out_of_distribution_warning  # noqa: E402
from pneumo.pdf_report import DISCLAIMER, METADATA_FIELDS  # noqa: E402

EXAMPLES = sorted(str(path) for path in (REPO_ROOT / "examples").glob("*.jpeg"))
# Two CPU cores: two requests at a time, and a bounded line behind them.
CONCURRENCY_LIMIT = 2
QUEUE_SIZE = 64
SHARE_SERVICE_HOST = "api.gradio.app"
# How long our own copy of a served file (report, heatmap) lives; Gradio keeps its download copy until
# delete_cache purges it.
SERVED_FILE_LIFETIME_S = 10.0


class DecisionLabel(gr.Label):
    """gr.Label whose headline is the model's thresholded decision, not simply the larger probability."""

    def get_block_name(self) -> str:
        return "label"  # drawn by Gradio's own Label component

    def postprocess(self, value):
        if isinstance(value, dict) and "decision" in value:
            data = super().postprocess(value["probabilities"])
            data.label = value["decision"]
            return data
        return super().postprocess(value)


def short_lived_folder() -> Path:
    """A temporary folder deleted SERVED_FILE_LIFETIME_S after creation, once Gradio has copied what it holds."""
    folder = tempfile.mkdtemp(prefix="pneumo-served-")
    timer = threading.Timer(SERVED_FILE_LIFETIME_S, shutil.rmtree, args=(folder,), kwargs={"ignore_errors": True})
    timer.daemon = True
    timer.start()
    return Path(folder)


def served_png(image, name: str) -> str:
    """The heatmap as a PNG file: Gradio copies files into its cache atomically, while it rewrites an array's
    cache file in place, which truncated downloads when many clients sent the same image at once."""
    path = short_lived_folder() / f"{name}.png"
    Image.fromarray(image).save(path)
    return str(path)


def label_value(result: dict) -> dict:
    return {"decision": result["label"], "probabilities": result["probabilities"]}


def as_gradio_errors(function):
    """A bad upload becomes a message on the page, and the app keeps serving."""
    @functools.wraps(function)
    def wrapped(predictors, path, *args):
        if not path:
            raise gr.Error(f"Upload a chest X-ray first ({SUPPORTED_FORMATS_TEXT}).")
        try:
            return function(predictors, path, *args)
        except PneumoError as error:
            raise gr.Error(str(error)) from None
    return wrapped


# The handlers: plain functions of the loaded models and the page's inputs, testable without a browser.

@as_gradio_errors
def compare_models(predictors, path):
    """Every model on one upload: the agreement banner, then label, heatmap and details per model, then all results."""
    summary, overlays = compare(predictors, path)
    banner = ("Both models agree." if summary["agree"] else
              "⚠️ **The models disagree on this image**: treat both answers with caution.")
    if warning := out_of_distribution_warning(summary["models"]):
        banner = f"⚠️ **{warning}**\n\n{banner}"
    outputs = [banner]
    for name, result in summary["models"].items():
        outputs += [label_value(result), served_png(overlays[name], f"gradcam-{name}"), result]
    return [*outputs, summary]


@as_gradio_errors
def predict(predictors, path, model_name, explain_class):
    """One model on one upload: label, heatmap of `explain_class` (default: the predicted class), details."""
    if model_name not in predictors:
        raise gr.Error(f"Unknown model {model_name!r}; choose one of {', '.join(predictors)}.")
    result, overlay = analyse(predictors[model_name], path, explain_class or None)
    if warning := out_of_distribution_warning({model_name: result}):
        gr.Warning(warning)
    return label_value(result), served_png(overlay, f"gradcam-{model_name}"), result


@as_gradio_errors
def make_report(predictors, path, *values):
    """The PDF report of one upload with the metadata typed in (nothing of it is logged or kept)."""
    metadata = dict(zip([key for key, _ in METADATA_FIELDS], values))
    return str(report(predictors, path, metadata, short_lived_folder() / "pneumo-report.pdf"))


def upload_box():
    return gr.File(label=f"Chest X-ray ({SUPPORTED_FORMATS_TEXT})", file_types=list(SUPPORTED_SUFFIXES),
                   type="filepath")


def build_app(predictors) -> gr.Blocks:
    names = list(predictors)
    # delete_cache: Gradio's own copies of uploads and reports are purged within the hour.
    with gr.Blocks(title="pneumo: pneumonia on chest X-rays", delete_cache=(600, 3600)) as demo:
        gr.Markdown("# pneumo: pneumonia on pediatric chest X-rays\n" + DISCLAIMER)
        with gr.Tab("Compare"):
            upload = upload_box()
            gr.Examples(EXAMPLES, inputs=upload, label="Example X-rays (from the official test set)")
            compare_button = gr.Button("Compare both models", variant="primary")
            banner = gr.Markdown(elem_id="agreement-banner", label="Agreement")
            outputs = [banner]
            with gr.Row():
                for name in names:
                    with gr.Column():
                        gr.Markdown(f"### {name}")
                        outputs += [DecisionLabel(label=f"{name}: decision and calibrated probabilities"),
                                    gr.Image(label=f"{name}: Grad-CAM", format="png"),
                                    gr.JSON(label=f"{name}: details (threshold, revision, seconds)")]
            all_results = gr.JSON(visible=False, label="All models (label, probabilities, agreement)")
            compare_button.click(functools.partial(compare_models, predictors), upload, [*outputs, all_results],
                                 api_name="compare")

        for index, name in enumerate(names):
            with gr.Tab(name):
                model_upload = upload_box()
                gr.Examples(EXAMPLES, inputs=model_upload)
                model_name = gr.Dropdown(names, value=name, label="Model", visible=False)
                explain = gr.Radio(predictors[name].class_names, value=None,
                                   label="Heatmap explains (default: the predicted class)")
                model_button = gr.Button(f"Run {name}", variant="primary")
                with gr.Row():
                    label = DecisionLabel(label="Decision and calibrated probabilities")
                    overlay = gr.Image(label="Grad-CAM", format="png")
                details = gr.JSON(label="Details")
                # One public /predict endpoint (image, model name, class to explain); the other tabs reuse it.
                model_button.click(functools.partial(predict, predictors), [model_upload, model_name, explain],
                                   [label, overlay, details],
                                   api_name="predict" if index == 0 else f"predict_tab_{index}",
                                   api_visibility="public" if index == 0 else "undocumented")

        with gr.Tab("Report"):
            gr.Markdown("Fill in what you want printed; nothing you type is logged or kept on the server.")
            report_upload = upload_box()
            gr.Examples(EXAMPLES, inputs=report_upload)
            with gr.Row():
                fields = [gr.Textbox(label=label, lines=3 if key == "notes" else 1) for key, label in METADATA_FIELDS]
            report_button = gr.Button("Create PDF report", variant="primary")
            report_file = gr.File(label="PDF report")
            report_button.click(functools.partial(make_report, predictors), [report_upload, *fields], report_file,
                                api_name="report")

        with gr.Tab("About"):
            gr.Markdown("## The models\n\n" + "\n\n".join(model_summary(p) for p in predictors.values()))
            gr.Markdown("Metrics come from each model folder (`metrics_validation.json`, `metrics_test.json`). "
                        "Threshold and calibration temperature were fitted on a patient-level validation split "
                        "of the training data; the official test set was scored once, at the end.\n\n"
                        "## Limitations\n- One hospital, children aged 1-5, images downsized to 224x224.\n"
                        "- Grad-CAM shows where a model looked, not proof of disease.\n"
                        "- Any image is treated as a frontal chest X-ray.\n\n" + DISCLAIMER)
    return demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY_LIMIT)


def launch(demo: gr.Blocks, **options):
    """Serve the page; uploads larger than the library reads are refused before they are stored."""
    return demo.launch(max_file_size=MAX_FILE_BYTES, **options)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cnn-lstm", help="model reference for the CNN+LSTM")
    parser.add_argument("--resnet50", help="model reference for the ResNet50")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--share", action="store_true", help="ask Gradio for a public link")
    args = parser.parse_args(argv)
    try:
        predictors = load_demo_predictors(model_references({"CNN+LSTM": args.cnn_lstm, "ResNet50": args.resnet50}))
    except PneumoError as error:
        raise SystemExit(f"pneumo: {error}") from None
    share = args.share and share_service_reachable()
    if args.share and not share:
        print(f"pneumo: no public link (Gradio's share service is unreachable); serving on http://{args.host}:{args.port}")
    launch(build_app(predictors), server_name=args.host, server_port=args.port, share=share)


def share_service_reachable(timeout_s: float = 3.0) -> bool:
    """Whether Gradio's share service answers; without internet, --share falls back to local serving."""
    import socket

    try:
        socket.create_connection((SHARE_SERVICE_HOST, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


if __name__ == "__main__":
    main()
