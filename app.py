"""pneumo demo: the bundled models side by side on a pediatric chest X-ray, with heatmaps and a PDF report.

    python app.py [--cnn-lstm REF] [--resnet50 REF] [--<model> REF ...] [--host 127.0.0.1] [--port 7860] [--share]

One option per bundled model (pneumo.hub.bundled.BUNDLED_MODELS, named after its environment variable:
PNEUMO_CNN_LSTM_MODEL -> --cnn-lstm). REF is a model folder or a Hub repo `OWNER/NAME[@REVISION]`; the
defaults are the bundled models/ folders, or the PNEUMO_*_MODEL environment variables.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import html
import logging
import os
import re
import signal
import threading

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gradio as gr  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402

from pneumo import ModelLoadError, PneumoError  # noqa: E402
from pneumo.prediction.analysis import analyse, compare, preview  # noqa: E402
from pneumo.hub.bundled import (  # noqa: E402
    BUNDLED_MODELS,
    REPO_ROOT,
    load_models,
    model_references,
)
from pneumo.demo.network_loader import networks_loading  # noqa: E402
from pneumo.demo.panels import (  # noqa: E402
    PAGE_CSS,
    banner_text,
    decision_panel,
    details_table,
    heatmap_caption,
    model_summary,
    models_table,
    user_message,
)
from pneumo.formats import SUPPORTED_FORMATS_TEXT, SUPPORTED_SUFFIXES  # noqa: E402
from pneumo.imaging.decoding import MAX_FILE_BYTES  # noqa: E402
from pneumo.demo.pdf_report import DISCLAIMER, METADATA_FIELDS, report  # noqa: E402
from pneumo.demo.served_files import (  # noqa: E402
    CACHE_SWEEP_S,
    EMPTY_FILE_AGE_S,
    REAPER,
    DeleteOnceServed,
    OneTimeFiles,
    clean_up_at_stop,
    remove_empty_files,
    remove_leftovers,
    served_jpeg,
    served_png,
)
from pneumo.demo.verdicts import TARGET_NAMES, TEST_SET_TARGETS, model_limits, target_text  # noqa: E402

EXAMPLES = sorted(str(path) for path in (REPO_ROOT / "examples").glob("*.jpeg"))
# Two CPU cores: two requests at a time, and a bounded line behind them.
CONCURRENCY_LIMIT = 2
QUEUE_SIZE = 64
# Gradio's queue looks for work every millisecond while it has none or its workers are busy (Queue.sleep_when_free;
# no public setting): 9% of a core on an idle demo, and a warm /compare 18-45 ms slower and 5-15% dearer in CPU on
# 2 cores than when it looks every 10 ms, which delays a request's start by 5 ms on average.
QUEUE_POLL_S = 0.01
SHARE_SERVICE_HOST = "api.gradio.app"
# glibc gives each thread serving requests a malloc arena of its own, and keeps their freed memory: the demo's
# resident memory grew 9.2% over 400 soak calls (benchmarks/soak.py), and stayed flat with two arenas.
MALLOC_ARENAS = 2
M_ARENA_MAX = -8  # mallopt's parameter for it (glibc's malloc.h)
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


class ModelRadio(gr.Radio):
    """gr.Radio that lets an API client name a model by its folder too ('resnet50'): page_name checks the name."""

    def get_block_name(self) -> str:
        return "radio"  # drawn by Gradio's own Radio component

    def preprocess(self, payload):
        return payload


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
        except ModelLoadError as error:  # a network that failed to load behind the page (pneumo.hub.bundled)
            raise gr.Error(html.escape(str(error)), print_exception=False) from None
        except PneumoError as error:
            LOG.warning("pneumo: refused an upload (%s)", getattr(error, "reason", type(error).__name__))
            raise gr.Error(html.escape(user_message(error, path)), print_exception=False) from None
    return wrapped


# The handlers: plain functions of the loaded models and the page's inputs, testable without a browser.

def chosen_models(predictors, names) -> dict:
    """The models a request names (by the page's name or its folder's, in any case), in its order, by the page's
    name: each one loaded, none twice."""
    names = [page_name(predictors, name) for name in names]
    if len(set(names)) < len(names):
        raise gr.Error(f"Choose two different models to compare ({names[0]} is chosen twice).",
                       print_exception=False)
    return {name: predictors[name] for name in names}


def page_name(predictors, name: str) -> str:
    """The page's name of the model a request names: its page name ('ResNet50') or its folder's ('resnet50')."""
    if name in predictors:
        return name
    wanted = str(name).casefold()
    for shown, predictor in predictors.items():
        if wanted in (shown.casefold(), predictor.name.casefold()):
            return shown
    raise gr.Error(f"Unknown model {name!r}; choose one of {', '.join(predictors)}.", print_exception=False)


def default_pair(predictors) -> list[str]:
    """The pair compared unless a request names another: the first two models (CNN+LSTM and ResNet50)."""
    return list(predictors)[:2]


def file_stem(name: str) -> str:
    """A model's name as part of a file name ('CNN+LSTM' -> 'CNN-LSTM', 'Row LSTM' -> 'Row-LSTM')."""
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")


@as_gradio_errors
def compare_models(predictors, path, model_a=None, model_b=None):
    """Two models on one upload (default: the first two): the agreement banner, then label, heatmap and details
    of model A and of model B, then both results."""
    first, second = default_pair(predictors)
    pair = chosen_models(predictors, [model_a or first, model_b or second])
    summary, overlays = compare(pair, path)
    outputs = [banner_text(summary["models"], model_limits(pair))]
    for name, result in summary["models"].items():
        outputs += [label_value(result), served_jpeg(overlays[name], f"heatmap-{file_stem(name)}"), result]
    return [*outputs, summary]


@as_gradio_errors
def predict(predictors, path, model_name=None, explain_class=None):
    """One model on one upload: label, heatmap of `explain_class` (default: the predicted class), details."""
    model_name = model_name or default_pair(predictors)[0]
    (model_name, predictor), = chosen_models(predictors, [model_name]).items()
    result, overlay = analyse(predictor, path, explain_class or None)
    return label_value(result), served_jpeg(overlay, f"heatmap-{file_stem(model_name)}"), result


@as_gradio_errors
def make_report(predictors, path, patient="", age="", sex="", exam_date="", physician="", notes="", model_a=None,
                model_b=None):
    """The PDF report of one upload by two models (default: the first two), with the metadata typed in
    (nothing of it is logged or kept; the parameters are METADATA_FIELDS, named so in the API)."""
    values = {"patient": patient, "age": age, "sex": sex, "exam_date": exam_date, "physician": physician,
              "notes": notes}
    metadata = {key: values[key] for key, _ in METADATA_FIELDS}
    first, second = default_pair(predictors)
    pair = chosen_models(predictors, [model_a or first, model_b or second])
    return str(report(pair, path, metadata, REPORTS.new_path("pneumo-report.pdf")))


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
    """What the model tab shows of /predict's result."""
    return decision_panel({name: result}, limits), heatmap_caption(result), details_table({name: result})


def heatmap_label(predictors, name, slot: str = "") -> str:
    """A heatmap's label on the page: 'Model A: CNN+LSTM (Grad-CAM)'."""
    return f"{slot + ': ' if slot else ''}{name} ({predictors[name].explanation_method})"


def report_pair(model_a, model_b) -> str:
    return f"The PDF holds the two models chosen in the Compare tab: **{model_a}** and **{model_b}**."


def pair_shown(predictors, model_a, model_b):
    """What the page says of a newly chosen pair: the two heatmaps' labels and the Report tab's line."""
    return (gr.update(label=heatmap_label(predictors, model_a, "Model A")),
            gr.update(label=heatmap_label(predictors, model_b, "Model B")), report_pair(model_a, model_b))


def model_shown(predictors, name):
    """What the model tab says of a newly chosen model: its button, its heatmap's label, its classes."""
    return (gr.update(value=f"Run {name} on the X-ray above"), gr.update(label=heatmap_label(predictors, name)),
            gr.update(choices=list(predictors[name].class_names), value=None))


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
    if len(names) < 2:
        raise ValueError("the demo compares two models: load at least two")
    first, second = default_pair(predictors)
    limits = model_limits(predictors)
    # delete_cache: uploads, the X-ray preview and the heatmaps leave Gradio's cache within about an hour
    # (pneumo.demo.served_files).
    with gr.Blocks(title="pneumo: pneumonia on chest X-rays", delete_cache=CACHE_SWEEP_S) as demo:
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
            # The pair compared here is also the pair in the PDF report.
            with gr.Row():
                # A custom value: an API client may name a model by its folder too ('resnet50'); page_name checks it.
                model_a = gr.Dropdown(names, value=first, label="Model A", elem_id="model-a", allow_custom_value=True)
                model_b = gr.Dropdown(names, value=second, label="Model B", elem_id="model-b", allow_custom_value=True)
            compare_button = gr.Button("Compare both models", variant="primary")
            decisions = gr.HTML(elem_id="compare-decisions")
            banner = gr.Markdown(visible=False, label="Agreement")  # for the API; the page draws decisions
            api_outputs, captions, pair_overlays = [banner], [], []
            with gr.Row():
                for slot, name in (("Model A", first), ("Model B", second)):
                    with gr.Column():
                        overlay = gr.Image(label=heatmap_label(predictors, name, slot), format="jpeg",
                                           interactive=False)
                        pair_overlays.append(overlay)
                        captions.append(gr.HTML())
                        api_outputs += [DecisionLabel(label=f"{slot}: decision and calibrated probabilities",
                                                      visible=False), overlay,
                                        gr.JSON(label=f"{slot}: details", visible=False)]
            details = gr.Markdown(elem_classes="pneumo-details")
            all_results = gr.JSON(visible=False, label="Both models (label, probabilities, agreement)")
            page = [decisions, *captions, details]
            compared = [*api_outputs, all_results, *page]
            all_outputs += compared
            (compare_button.click(cleared(compared), None, compared, queue=False, api_visibility="private")
             .then(functools.partial(compare_models, predictors), [upload, model_a, model_b],
                   [*api_outputs, all_results], api_name="compare")
             .success(functools.partial(compare_page, limits), all_results, page, api_visibility="private")
             .success(None, js=show_whole("compare-decisions")))

        # One tab for all the models, with a picker: a tab each would not fit a phone's tab bar beside Compare,
        # Report and About, and Gradio would fold the last tabs out of sight.
        with gr.Tab("One model"):
            model_name = ModelRadio(names, value=first, label="Model", elem_id="model-picker")
            explain = gr.Radio(predictors[first].class_names, value=None,
                               label="Heatmap explains (default: the predicted class)")
            model_button = gr.Button(f"Run {first} on the X-ray above", variant="primary")
            decision = gr.HTML(elem_id="model-decision")
            with gr.Row():
                overlay = gr.Image(label=heatmap_label(predictors, first), format="jpeg", interactive=False)
                caption = gr.HTML()
            details = gr.Markdown(elem_classes="pneumo-details")
            api_outputs = [DecisionLabel(label="Decision and calibrated probabilities", visible=False), overlay,
                           gr.JSON(label="Details", visible=False)]
            page = [decision, caption, details]
            single = [*api_outputs, *page]
            all_outputs += single
            (model_button.click(cleared(single), None, single, queue=False, api_visibility="private")
             .then(functools.partial(predict, predictors), [upload, model_name, explain], api_outputs,
                   api_name="predict")
             .success(functools.partial(model_page, limits), [model_name, api_outputs[2]], page,
                      api_visibility="private")
             .success(None, js=show_whole("model-decision")))
            # A result on the page is always the chosen model's.
            (model_name.change(cleared(single), None, single, queue=False, api_visibility="private")
             .then(functools.partial(model_shown, predictors), model_name, [model_button, overlay, explain],
                   queue=False, api_visibility="private"))

        with gr.Tab("Report"):
            gr.Markdown("A PDF of the X-ray above with two models' results. Fill in what you want printed: nothing "
                        "you type is logged or kept on the server, and the PDF is deleted once downloaded.")
            report_models = gr.Markdown(report_pair(first, second))
            with gr.Row():
                fields = [gr.Textbox(label=label, lines=3 if key == "notes" else 1) for key, label in METADATA_FIELDS]
            report_button = gr.Button("Create PDF report", variant="primary")
            report_file = gr.File(label="PDF report (one download)")
            all_outputs.append(report_file)
            (report_button.click(cleared([report_file]), None, report_file, queue=False, api_visibility="private")
             .then(functools.partial(make_report, predictors), [upload, *fields, model_a, model_b], report_file,
                   api_name="report"))

        # A newly chosen pair: the results of the last one go, and the labels name the new one.
        for picker in (model_a, model_b):
            (picker.change(cleared(compared), None, compared, queue=False, api_visibility="private")
             .then(functools.partial(pair_shown, predictors), [model_a, model_b], [*pair_overlays, report_models],
                   queue=False, api_visibility="private"))

        with gr.Tab("About"):
            targets = ", ".join(f"{TARGET_NAMES[key]} {target_text(key)}" for key in TEST_SET_TARGETS)
            methods = " or ".join(dict.fromkeys(p.explanation_method for p in predictors.values()))
            gr.Markdown("## The models\n\n" + models_table(predictors)
                        + "\n\nMetrics come from each model folder (`metrics_validation.json`, `metrics_test.json`; "
                        "ECE: expected calibration error; n/a: not measured). Threshold and calibration were fitted "
                        "on a patient-level validation split of the training data; the official test set was scored "
                        f"once, at the end. The project's targets on the official test set: {targets}.\n\n"
                        + "\n\n".join(model_summary(p, name) for name, p in predictors.items())
                        + "\n\n## Limitations\n- One hospital, children aged 1-5.\n"
                        "- A verdict is only as good as the error rates above, measured on one hospital's X-rays; "
                        "two models that agree can both be wrong.\n"
                        f"- A heatmap ({methods}) shows where a model looked, not where the disease is.\n"
                        "- Any image is treated as a frontal chest X-ray; an out-of-distribution check warns about "
                        "images unlike the training X-rays.")

        (upload.change(cleared(all_outputs), None, all_outputs, queue=False, api_visibility="private")
         .then(functools.partial(show_xray_if_any, predictors), upload, xray, api_visibility="private"))
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY_LIMIT)
    demo._queue.sleep_when_free = QUEUE_POLL_S
    return demo


def launch(demo: gr.Blocks, **options):
    """Serve the page: uploads larger than the library reads are refused before they are stored, the browser
    keeps no history of runs (Gradio 6 would keep every input and result), a PDF report is deleted once
    downloaded, and the files an earlier run left behind are deleted first. Served until Ctrl+C or SIGTERM
    (unless `prevent_thread_lock`), after which the files it served are deleted (pneumo.demo.served_files)."""
    remove_leftovers()
    REAPER.every(EMPTY_FILE_AGE_S, remove_empty_files)  # the empty file Gradio leaves on each call
    blocking = not options.get("prevent_thread_lock") and threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop_on_sigterm(demo)) if blocking else None
    try:
        return demo.launch(max_file_size=MAX_FILE_BYTES, run_history=False, theme=THEME, css=PAGE_CSS,
                           app_kwargs={"middleware": [Middleware(DeleteOnceServed, files=REPORTS)]}, **options)
    finally:
        if blocking:
            demo.close()  # Gradio's own clean-up: it deletes the uploads and copies it kept
            clean_up_at_stop()
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def stop_on_sigterm(demo: gr.Blocks):
    """A SIGTERM handler (docker stop, a Space restarting, `kill`) that stops the demo as Ctrl+C does: the server
    is closed, launch() returns and cleans up, and the process exits 0. Without it the process died at once,
    leaving every upload and heatmap behind."""
    def stop(signum, frame):
        if demo.is_running:
            demo.close()  # launch() stops waiting and returns
        else:  # still starting
            raise SystemExit(0)
    return stop


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas at `arenas`, as the Dockerfile's MALLOC_ARENA_MAX does where the environment is
    not ours (a Space, `python app.py`). Called before the models load and the server starts its threads, while
    the process has its first two arenas: glibc fixes its limit once it has more than eight. Returns whether it
    was set: not without glibc (a no-op there), nor over a MALLOC_ARENA_MAX the environment sets."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        glibc = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):  # no confstr, or no such name: not glibc
        glibc = None
    if not glibc:
        return False
    return ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, arenas) == 1


def model_option(variable: str) -> str:
    """A bundled model's command-line option, from its environment variable: PNEUMO_CNN_LSTM_MODEL -> --cnn-lstm."""
    return "--" + variable.removeprefix("PNEUMO_").removesuffix("_MODEL").lower().replace("_", "-")


def main(argv=None):
    limit_malloc_arenas()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, (variable, _) in BUNDLED_MODELS.items():
        parser.add_argument(model_option(variable), dest=variable, metavar="REF",
                            help=f"model reference for the {name} (default: ${variable}, else the bundled folder)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--share", action="store_true", help="ask Gradio for a public link")
    args = parser.parse_args(argv)
    overrides = {name: getattr(args, variable) for name, (variable, _) in BUNDLED_MODELS.items()}
    try:
        # The page is built from what each model folder says and served before the networks load: 8 s after
        # start instead of 19 on 2 cores (benchmarks/app_speed.py). A request waits for the network it needs.
        predictors = load_models(model_references(overrides), defer_networks=True)
    except PneumoError as error:
        raise SystemExit(f"pneumo: {error}") from None
    share = args.share and share_service_reachable()
    if args.share and not share:
        print(f"pneumo: no public link (Gradio's share service is unreachable); serving on http://{args.host}:{args.port}")
    demo = build_app(predictors)
    pair = [predictors[name] for name in default_pair(predictors)]
    with networks_loading(predictors.values(), traced=pair, start_when=lambda: demo.is_running):
        launch(demo, server_name=args.host, server_port=args.port, share=share)


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
