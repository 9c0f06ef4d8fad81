"""pneumo demo: the bundled models side by side on a pediatric chest X-ray, with heatmaps and a PDF report.

    python app.py [--cnn-lstm REF] [--resnet50 REF] [--<model> REF ...] [--host 127.0.0.1] [--port 7860] [--share]

One option per bundled model (pneumo.hub.bundled.BUNDLED_MODELS, named after its environment variable:
PNEUMO_CNN_LSTM_MODEL -> --cnn-lstm). REF is a model folder or a Hub repo `OWNER/NAME[@REVISION]`; the
defaults are the bundled models/ folders, or the PNEUMO_*_MODEL environment variables.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import threading

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gradio as gr  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402

from pneumo import PneumoError  # noqa: E402
from pneumo.demo.about import about_each_model, about_limitations, about_models  # noqa: E402
from pneumo.demo.handlers import (  # noqa: E402
    COMPARE_OUTPUTS,
    PREDICT_OUTPUTS,
    REPORT_DOWNLOADED,
    REPORTS,
    SLOTS,
    DecisionLabel,
    ModelRadio,
    cleared,
    compare_models,
    compare_page,
    default_pair,
    heatmap_label,
    in_order,
    loading_shown,
    loading_status,
    make_report,
    model_page,
    model_shown,
    pair_shown,
    predict,
    report_pair,
    show_whole,
    show_xray_or_why_not,
)
from pneumo.demo.network_loader import networks_loading  # noqa: E402
from pneumo.demo.panels import PAGE_CSS  # noqa: E402
from pneumo.demo.pdf_report import DISCLAIMER, METADATA_FIELDS  # noqa: E402
from pneumo.demo.server import (  # noqa: E402
    limit_malloc_arenas,
    poll_queue_less_often,
    share_service_reachable,
    stop_on_sigterm,
)
from pneumo.demo.served_files import (  # noqa: E402
    CACHE_SWEEP_S,
    EMPTY_FILE_AGE_S,
    REAPER,
    DeleteOnceServed,
    clean_up_at_stop,
    remove_empty_files,
    remove_leftovers,
)
from pneumo.demo.verdicts import model_limits  # noqa: E402
from pneumo.formats import SUPPORTED_FORMATS_TEXT, SUPPORTED_SUFFIXES  # noqa: E402
from pneumo.hub.bundled import BUNDLED_MODELS, REPO_ROOT, load_models, model_references  # noqa: E402
from pneumo.imaging.decoding import MAX_FILE_BYTES  # noqa: E402

EXAMPLES = sorted(str(path) for path in (REPO_ROOT / "examples").glob("*.jpeg"))
# Two CPU cores: two requests at a time, and a bounded line behind them.
CONCURRENCY_LIMIT = 2
QUEUE_SIZE = 64
# Gradio's default theme, with bold text in the Bold faces: the SemiBold ones it ships hold only a few dozen
# glyphs, so semibold words were drawn in two fonts ("PNEUMONI" in one, "A" in another).
THEME = gr.themes.Default(
    font=(gr.themes.LocalFont("Source Sans Pro", weights=(400, 700)), "ui-sans-serif", "system-ui", "sans-serif"),
    font_mono=(gr.themes.LocalFont("IBM Plex Mono", weights=(400, 700)), "ui-monospace", "Consolas", "monospace"))


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
        status, waiting = loading_status(predictors)
        loading = gr.Markdown(status, elem_id="loading-status")
        # Asked again every 2 s while networks load behind the page (a cold start), then no more.
        ticks = gr.Timer(2, active=waiting)
        ticks.tick(functools.partial(loading_shown, predictors), None, [loading, ticks], queue=False,
                   api_visibility="private")
        xray = gr.Image(label="The X-ray as the models read it", format="png", interactive=False, height=300,
                        elem_id="xray-preview", buttons=["fullscreen"], scale=2, render=False)
        with gr.Row():
            with gr.Column(scale=3):
                upload = gr.File(label=f"Chest X-ray ({SUPPORTED_FORMATS_TEXT})", file_types=list(SUPPORTED_SUFFIXES),
                                 type="filepath", height=140, elem_id="upload")
                upload_note = gr.Markdown(elem_id="upload-note")  # why the file chosen cannot be read
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
            api = {"banner": gr.Markdown(visible=False, label="Agreement")}  # for the API; the page draws decisions
            captions, pair_overlays = [], []
            with gr.Row():
                for slot, title, name in zip(SLOTS, ("Model A", "Model B"), (first, second)):
                    with gr.Column():
                        overlay = gr.Image(label=heatmap_label(predictors, name, title), format="jpeg",
                                           interactive=False)
                        pair_overlays.append(overlay)
                        captions.append(gr.HTML())
                        api.update({f"label_{slot}": DecisionLabel(label=f"{title}: decision and calibrated "
                                                                         "probabilities", visible=False),
                                    f"heatmap_{slot}": overlay,
                                    f"details_{slot}": gr.JSON(label=f"{title}: details", visible=False)})
            details = gr.Markdown(elem_classes="pneumo-details")
            api["both"] = gr.JSON(visible=False, label="Both models (label, probabilities, agreement)")
            api_outputs = in_order(api, COMPARE_OUTPUTS)
            page = [decisions, *captions, details]
            compared = [*api_outputs, *page]
            all_outputs += compared
            (compare_button.click(cleared(compared), None, compared, queue=False, api_visibility="private")
             .then(functools.partial(compare_models, predictors), [upload, model_a, model_b], api_outputs,
                   api_name="compare")
             .success(functools.partial(compare_page, limits), api["both"], page, api_visibility="private")
             .success(None, js=show_whole("compare-decisions")))

        # One tab for all the models, with a picker: a tab each would not fit a phone's tab bar beside Compare,
        # Report and About, and Gradio would fold the last tabs out of sight.
        with gr.Tab("One model"):
            model_name = ModelRadio(names, value=first, label="Model", elem_id="model-picker")
            explain = gr.Radio(predictors[first].class_names, value=None,
                               label="Heatmap explains (default: the predicted class)")
            model_button = gr.Button(f"Run {first} on the X-ray above", variant="primary")
            decision = gr.HTML(elem_id="model-decision")
            # Columns with a minimum width: on a phone the caption goes below the heatmap, which keeps its width.
            with gr.Row():
                with gr.Column(min_width=300):
                    overlay = gr.Image(label=heatmap_label(predictors, first), format="jpeg", interactive=False)
                with gr.Column(min_width=300):
                    caption = gr.HTML()
            details = gr.Markdown(elem_classes="pneumo-details")
            api = {"label": DecisionLabel(label="Decision and calibrated probabilities", visible=False),
                   "heatmap": overlay, "details": gr.JSON(label="Details", visible=False)}
            api_outputs = in_order(api, PREDICT_OUTPUTS)
            page = [decision, caption, details]
            single = [*api_outputs, *page]
            all_outputs += single
            (model_button.click(cleared(single), None, single, queue=False, api_visibility="private")
             .then(functools.partial(predict, predictors), [upload, model_name, explain], api_outputs,
                   api_name="predict")
             .success(functools.partial(model_page, limits), [model_name, api["details"]], page,
                      api_visibility="private")
             .success(None, js=show_whole("model-decision")))
            # A result on the page is always the chosen model's, and its heatmap the chosen class's.
            (model_name.change(cleared(single), None, single, queue=False, api_visibility="private")
             .then(functools.partial(model_shown, predictors), model_name, [model_button, overlay, explain],
                   queue=False, api_visibility="private"))
            explain.input(cleared(single), None, single, queue=False, api_visibility="private")

        with gr.Tab("Report"):
            gr.Markdown("A PDF of the X-ray above with two models' results. Fill in what you want printed: nothing "
                        "you type is logged or kept on the server, and the PDF is deleted once downloaded.")
            report_models = gr.Markdown(report_pair(first, second))
            with gr.Row():
                fields = [gr.Textbox(label=label, lines=3 if key == "notes" else 1) for key, label in METADATA_FIELDS]
            report_button = gr.Button("Create PDF report", variant="primary")
            report_file = gr.File(label="PDF report (one download)")
            report_note = gr.Markdown()
            all_outputs.append(report_file)
            (report_button.click(cleared([report_file, report_note]), None, [report_file, report_note], queue=False,
                                 api_visibility="private")
             .then(functools.partial(make_report, predictors), [upload, *fields, model_a, model_b], report_file,
                   api_name="report"))
            # The server deletes the PDF once sent: its link goes with it, rather than fail on a second click.
            report_file.download(lambda: (None, REPORT_DOWNLOADED), None, [report_file, report_note], queue=False,
                                 api_visibility="private")

        # A newly chosen pair: the results of the last one go, and the labels name the new one.
        for picker in (model_a, model_b):
            (picker.change(cleared(compared), None, compared, queue=False, api_visibility="private")
             .then(functools.partial(pair_shown, predictors), [model_a, model_b], [*pair_overlays, report_models],
                   queue=False, api_visibility="private"))

        with gr.Tab("About"):
            gr.Markdown(about_models(predictors))
            for name, text in about_each_model(predictors).items():
                with gr.Accordion(f"{name} in words: its limits and the targets it misses", open=False):
                    gr.Markdown(text)
            gr.Markdown(about_limitations(predictors))

        # Cleared at once, in the order the changes came; the queued step then only ever shows a file, so a
        # clearing that finishes late cannot wipe what the next file showed (why it cannot be read, say).
        upload_outputs = all_outputs + [xray, upload_note]
        (upload.change(cleared(upload_outputs), None, upload_outputs, queue=False, api_visibility="private")
         .then(functools.partial(show_xray_or_why_not, predictors), upload, [xray, upload_note],
               api_visibility="private"))
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY_LIMIT)
    poll_queue_less_often(demo)
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


if __name__ == "__main__":
    main()
