"""pneumo demo: two models side by side on a pediatric chest X-ray, with Grad-CAM and a PDF report.

    python app.py [--cnn-lstm REF] [--resnet50 REF] [--host 127.0.0.1] [--port 7860] [--share]

REF is a model folder or a Hub repo `OWNER/NAME[@REVISION]`; the defaults are the bundled models/
folders, or the PNEUMO_CNN_LSTM_MODEL / PNEUMO_RESNET50_MODEL environment variables.
"""

from __future__ import annotations

import argparse
import functools
import html
import logging
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gradio as gr  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402

from pneumo import PneumoError  # noqa: E402
from pneumo.bundled import REPO_ROOT, model_references  # noqa: E402
from pneumo.demo import (PAGE_CSS, analyse, banner_text, compare, decision_panel, details_table,  # noqa: E402
                         heatmap_caption, load_demo_predictors, model_limits, model_summary, preview, report,
                         user_message)
from pneumo.formats import SUPPORTED_FORMATS_TEXT, SUPPORTED_SUFFIXES  # noqa: E402
from pneumo.imaging import MAX_FILE_BYTES  # noqa: E402
from pneumo.pdf_report import DISCLAIMER, METADATA_FIELDS  # noqa: E402
from pneumo.served_files import DeleteOnceServed, OneTimeFiles, served_png  # noqa: E402
from pneumo.verdicts import TARGET_NAMES, TEST_SET_TARGETS  # noqa: E402

EXAMPLES = sorted(str(path) for path in (REPO_ROOT / "examples").glob("*.jpeg"))
# Two CPU cores: two requests at a time, and a bounded line behind them.
CONCURRENCY_LIMIT = 2
QUEUE_SIZE = 64
SHARE_SERVICE_HOST = "api.gradio.app"
REPORTS = OneTimeFiles()  # PDF reports, deleted once downloaded
# Gradio's default theme, with bold text in the Bold faces: the SemiBold ones it ships hold only a few dozen
# glyphs, so semibold words were drawn in two fonts ("PNEUMONI" in one, "A" in another).
THEME = gr.themes.Default(
    font=(gr.themes.LocalFont("Source Sans Pro", weights=(400, 700)), "ui-sans-serif", "system-ui", "sans-serif"),
    font_mono=(gr.themes.LocalFont("IBM Plex Mono", weights=(400, 700)), "ui-monospace", "Consolas", "monospace"))
LOG = logging.getLogger("pneumo.app")


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


def label_value(result: dict) -> dict:
    return {"decision": result["label"], "probabilities": result["probabilities"]}


def as_gradio_errors(function):
    """A bad upload becomes a message on the page naming the user's file, and one line in the server log
    (which names no file: a file name can be a patient's name); the app keeps serving."""
    @functools.wraps(function)
    def wrapped(predictors, path, *args):
        if not path:
            raise gr.Error(f"Upload a chest X-ray first ({SUPPORTED_FORMATS_TEXT}).", print_exception=False)
        try:
            return function(predictors, path, *args)
        except PneumoError as error:
            LOG.warning("pneumo: refused an upload (%s)", getattr(error, "reason", type(error).__name__))
            raise gr.Error(html.escape(user_message(error, path)), print_exception=False) from None
    return wrapped


# The handlers: plain functions of the loaded models and the page's inputs, testable without a browser.

@as_gradio_errors
def compare_models(predictors, path):
    """Every model on one upload: the agreement banner, then label, heatmap and details per model, then all results."""
    summary, overlays = compare(predictors, path)
    outputs = [banner_text(summary["models"], model_limits(predictors))]
    for name, result in summary["models"].items():
        outputs += [label_value(result), served_png(overlays[name], f"gradcam-{name}"), result]
    return [*outputs, summary]


@as_gradio_errors
def predict(predictors, path, model_name, explain_class):
    """One model on one upload: label, heatmap of `explain_class` (default: the predicted class), details."""
    if model_name not in predictors:
        raise gr.Error(f"Unknown model {model_name!r}; choose one of {', '.join(predictors)}.", print_exception=False)
    result, overlay = analyse(predictors[model_name], path, explain_class or None)
    return label_value(result), served_png(overlay, f"gradcam-{model_name}"), result


@as_gradio_errors
def make_report(predictors, path, *values):
    """The PDF report of one upload with the metadata typed in (nothing of it is logged or kept)."""
    metadata = dict(zip([key for key, _ in METADATA_FIELDS], values))
    return str(report(predictors, path, metadata, REPORTS.new_path("pneumo-report.pdf")))


@as_gradio_errors
def show_xray(predictors, path):
    """The upload decoded as the models read it (DICOM included)."""
    return served_png(preview(path), "xray")


def show_xray_if_any(predictors, path):
    return show_xray(predictors, path) if path else None


def compare_page(limits, summary):
    """What the Compare tab shows of /compare's results: verdicts, heatmap captions, the details table."""
    results = summary["models"]
    return [decision_panel(results, limits), *[heatmap_caption(r) for r in results.values()], details_table(results)]


def model_page(limits, name, result):
    """What a model's tab shows of /predict's result."""
    return decision_panel({name: result}, limits), heatmap_caption(result), details_table({name: result})


def show_whole(element_id: str) -> str:
    """Browser code that scrolls an element to the top of the window when part of it is out of sight (on a
    phone: both verdicts at once)."""
    return (f"() => setTimeout(() => {{ const e = document.getElementById('{element_id}'); "
            "if (e && e.getBoundingClientRect().bottom > window.innerHeight) e.scrollIntoView({block: 'start'}); }, 100)")


def cleared(outputs):
    """A handler that empties `outputs`: a new upload, a new run or an error leaves no stale result on the page."""
    return lambda: None if len(outputs) == 1 else [None] * len(outputs)


def build_app(predictors) -> gr.Blocks:
    names = list(predictors)
    limits = model_limits(predictors)
    # delete_cache: Gradio's own copies of uploads and heatmaps are purged within the hour.
    with gr.Blocks(title="pneumo: pneumonia on chest X-rays", delete_cache=(600, 3600)) as demo:
        gr.Markdown("# pneumo: pneumonia on pediatric chest X-rays\n" + DISCLAIMER)
        xray = gr.Image(label="The X-ray as the models read it", format="png", interactive=False, height=300,
                        elem_id="xray-preview", buttons=["fullscreen"], scale=2, render=False)
        with gr.Row():
            with gr.Column(scale=3):
                upload = gr.File(label=f"Chest X-ray ({SUPPORTED_FORMATS_TEXT})", file_types=list(SUPPORTED_SUFFIXES),
                                 type="filepath", height=140, elem_id="upload")
                # Thumbnails: each example fills the upload and, at once, the picture.
                gr.Examples([[path, path] for path in EXAMPLES], inputs=[upload, xray], visible_columns=[1],
                            label="Example X-rays (from the official test set)", examples_per_page=4, elem_id="examples")
            xray.render()
        all_outputs = []  # every result on the page, emptied when a new X-ray is chosen

        with gr.Tab("Compare"):
            compare_button = gr.Button("Compare both models", variant="primary")
            decisions = gr.HTML(elem_id="compare-decisions")
            banner = gr.Markdown(visible=False, label="Agreement")  # for the API; the page draws decisions
            api_outputs, captions = [banner], []
            with gr.Row():
                for name in names:
                    with gr.Column():
                        overlay = gr.Image(label=f"{name}: Grad-CAM", format="png", interactive=False)
                        captions.append(gr.HTML())
                        api_outputs += [DecisionLabel(label=f"{name}: decision and calibrated probabilities",
                                                      visible=False), overlay,
                                        gr.JSON(label=f"{name}: details", visible=False)]
            details = gr.Markdown(elem_classes="pneumo-details")
            all_results = gr.JSON(visible=False, label="All models (label, probabilities, agreement)")
            page = [decisions, *captions, details]
            everything = [*api_outputs, all_results, *page]
            all_outputs += everything
            (compare_button.click(cleared(everything), None, everything, queue=False, api_visibility="private")
             .then(functools.partial(compare_models, predictors), upload, [*api_outputs, all_results],
                   api_name="compare")
             .success(functools.partial(compare_page, limits), all_results, page, api_visibility="private")
             .success(None, js=show_whole("compare-decisions")))

        for index, name in enumerate(names):
            with gr.Tab(name):
                model_name = gr.Dropdown(names, value=name, label="Model", visible=False)
                explain = gr.Radio(predictors[name].class_names, value=None,
                                   label="Heatmap explains (default: the predicted class)")
                model_button = gr.Button(f"Run {name} on the X-ray above", variant="primary")
                decision = gr.HTML(elem_id=f"decisions-{index}")
                with gr.Row():
                    overlay = gr.Image(label="Grad-CAM", format="png", interactive=False)
                    caption = gr.HTML()
                details = gr.Markdown(elem_classes="pneumo-details")
                api_outputs = [DecisionLabel(label="Decision and calibrated probabilities", visible=False), overlay,
                               gr.JSON(label="Details", visible=False)]
                page = [decision, caption, details]
                everything = [*api_outputs, *page]
                all_outputs += everything
                # One public /predict endpoint (image, model name, class to explain); the other tabs reuse it.
                (model_button.click(cleared(everything), None, everything, queue=False, api_visibility="private")
                 .then(functools.partial(predict, predictors), [upload, model_name, explain], api_outputs,
                       api_name="predict" if index == 0 else f"predict_tab_{index}",
                       api_visibility="public" if index == 0 else "undocumented")
                 .success(functools.partial(model_page, limits, name), api_outputs[2], page,
                          api_visibility="private")
                 .success(None, js=show_whole(f"decisions-{index}")))

        with gr.Tab("Report"):
            gr.Markdown("A PDF of the X-ray above with both models' results. Fill in what you want printed: nothing "
                        "you type is logged or kept on the server, and the PDF is deleted once downloaded.")
            with gr.Row():
                fields = [gr.Textbox(label=label, lines=3 if key == "notes" else 1) for key, label in METADATA_FIELDS]
            report_button = gr.Button("Create PDF report", variant="primary")
            report_file = gr.File(label="PDF report (one download)")
            all_outputs.append(report_file)
            (report_button.click(cleared([report_file]), None, report_file, queue=False, api_visibility="private")
             .then(functools.partial(make_report, predictors), [upload, *fields], report_file, api_name="report"))

        with gr.Tab("About"):
            targets = ", ".join(f"{TARGET_NAMES[key]} ≥ {value:.2f}" for key, value in TEST_SET_TARGETS.items())
            gr.Markdown("## The models\n\n" + "\n\n".join(model_summary(p, name) for name, p in predictors.items())
                        + "\n\nMetrics come from each model folder (`metrics_validation.json`, `metrics_test.json`; "
                        "ECE: expected calibration error). Threshold and calibration were fitted on a patient-level "
                        "validation split of the training data; the official test set was scored once, at the end. "
                        f"The project's targets on the official test set: {targets}.\n\n"
                        "## Limitations\n- One hospital, children aged 1-5.\n"
                        "- A verdict is only as good as the error rates above, measured on one hospital's X-rays; "
                        "two models that agree can both be wrong.\n"
                        "- Grad-CAM shows where a model looked, not where the disease is.\n"
                        "- Any image is treated as a frontal chest X-ray; an out-of-distribution check warns about "
                        "images unlike the training X-rays.")

        (upload.change(cleared(all_outputs), None, all_outputs, queue=False, api_visibility="private")
         .then(functools.partial(show_xray_if_any, predictors), upload, xray, api_visibility="private"))
    return demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY_LIMIT)


def launch(demo: gr.Blocks, **options):
    """Serve the page: uploads larger than the library reads are refused before they are stored, the browser
    keeps no history of runs (Gradio 6 would keep every input and result), and a PDF report is deleted once
    downloaded."""
    return demo.launch(max_file_size=MAX_FILE_BYTES, run_history=False, theme=THEME, css=PAGE_CSS,
                       app_kwargs={"middleware": [Middleware(DeleteOnceServed, files=REPORTS)]}, **options)


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
