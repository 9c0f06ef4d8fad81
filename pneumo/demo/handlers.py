"""The demo's request handlers and the page's two components of its own: plain functions of the loaded models and
the page's inputs (app.py wires them to the layout), testable without a browser."""

from __future__ import annotations

import datetime as dt
import functools
import html
import logging
import re

import gradio as gr

from ..errors import ModelLoadError, PneumoError
from ..formats import SUPPORTED_FORMATS_TEXT
from ..prediction.analysis import analyse, compare, preview
from .panels import banner_text, decision_panel, details_table, heatmap_caption, user_message
from .pdf_report import METADATA_FIELDS, report
from .served_files import OneTimeFiles, served_jpeg, served_png
from .verdicts import gives_verdict, model_limits, shown_verdict

REPORTS = OneTimeFiles()  # PDF reports, deleted once downloaded
REPORT_DOWNLOADED = ("Downloaded. The server has deleted its copy (it holds what you typed): create the report again "
                     "to download it again.")
# Each endpoint's outputs, by name, in the API's order: the handlers return them in it and app.py lists the page's
# components in it, so a reorder in one place cannot silently swap what a client receives.
SLOTS = ("a", "b")  # Model A and Model B of the Compare tab
COMPARE_OUTPUTS = ("banner", "label_a", "heatmap_a", "details_a", "label_b", "heatmap_b", "details_b", "both")
PREDICT_OUTPUTS = ("label", "heatmap", "details")


def in_order(values: dict, names) -> list:
    """`values` (by output name) as the list Gradio takes, in the order of `names`."""
    return [values[name] for name in names]
LOG = logging.getLogger("pneumo.app")


class DecisionLabel(gr.Label):
    """gr.Label whose headline is the model's verdict, not simply the larger probability, and whose first
    confidence is the decided class's, so that a client reading the top entry reads the verdict. An image out of
    distribution has a verdict and no confidences (its probabilities are in the details)."""

    def get_block_name(self) -> str:
        return "label"  # drawn by Gradio's own Label component

    def postprocess(self, value):
        if isinstance(value, dict) and "decision" in value:
            if value["probabilities"] is None:
                return super().postprocess(value["decision"])
            data = super().postprocess(value["probabilities"])
            data.label = value["decision"]
            data.confidences.sort(key=lambda entry: entry.label != value["decision"])  # stable: the rest by value
            return data
        return super().postprocess(value)


class ModelRadio(gr.Radio):
    """gr.Radio that lets an API client name a model by its folder too ('resnet50'): page_name checks the name."""

    def get_block_name(self) -> str:
        return "radio"  # drawn by Gradio's own Radio component

    def preprocess(self, payload):
        return payload


def label_value(result: dict) -> dict:
    """What DecisionLabel shows of a result: the verdict, and the probabilities where there is a class."""
    probabilities = result["probabilities"] if gives_verdict(result) else None
    return {"decision": shown_verdict(result), "probabilities": probabilities}


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
    of model A and of model B, then both results (COMPARE_OUTPUTS)."""
    first, second = default_pair(predictors)
    pair = chosen_models(predictors, [model_a or first, model_b or second])
    summary, overlays = compare(pair, path)
    values = {"banner": banner_text(summary["models"], model_limits(pair)), "both": summary}
    for slot, (name, result) in zip(SLOTS, summary["models"].items()):
        values.update({f"label_{slot}": label_value(result), f"details_{slot}": result,
                       f"heatmap_{slot}": served_jpeg(overlays[name], f"heatmap-{file_stem(name)}")})
    return in_order(values, COMPARE_OUTPUTS)


@as_gradio_errors
def predict(predictors, path, model_name=None, explain_class=None):
    """One model on one upload: label, heatmap of `explain_class` (default: the predicted class), details
    (PREDICT_OUTPUTS)."""
    model_name = model_name or default_pair(predictors)[0]
    (model_name, predictor), = chosen_models(predictors, [model_name]).items()
    result, overlay = analyse(predictor, path, explain_class or None)
    return in_order({"label": label_value(result), "details": result,
                     "heatmap": served_jpeg(overlay, f"heatmap-{file_stem(model_name)}")}, PREDICT_OUTPUTS)


def report_file_name(when: dt.datetime | None = None) -> str:
    """'pneumo-report-2026-12-05-2051.pdf': the date and UTC time it was made (reports of a day sort in order)."""
    return f"pneumo-report-{(when or dt.datetime.now(dt.timezone.utc)):%Y-%m-%d-%H%M}.pdf"


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
    return str(report(pair, path, metadata, REPORTS.new_path(report_file_name())))


@as_gradio_errors
def show_xray(predictors, path):
    """The upload decoded as the models read it (DICOM included)."""
    return served_png(preview(path), "xray")


def show_xray_or_why_not(predictors, path):
    """(the upload as the models read it, what is said under the upload): why a file cannot be read stays next to
    it until another is chosen, where a toast would leave with the reason."""
    if not path:  # the box was cleared: the change event already emptied both
        return gr.skip(), gr.skip()
    try:
        return show_xray(predictors, path), ""
    except gr.Error as error:
        return None, f"⚠️ {error.message}"


def loading_status(predictors):
    """What the page says while the networks load behind it (a cold start), and whether to ask again: ('', False)
    once every network is ready."""
    waiting = [name for name, predictor in predictors.items() if not predictor.network_ready]
    if not waiting:
        return "", False
    ready = len(predictors) - len(waiting)
    return (f"⏳ Loading the models ({ready} of {len(predictors)} ready; still loading {', '.join(waiting)}). A "
            "request for a model still loading waits for it: up to a minute on a first start."), True


def loading_shown(predictors):
    """`loading_status` for the page: its text, and the timer that asks again, stopped once all are ready."""
    text, more = loading_status(predictors)
    return text, gr.Timer(active=more)


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
