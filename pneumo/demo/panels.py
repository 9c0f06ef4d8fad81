"""What the Gradio demo shows, as plain functions (app.py only lays out the page; pneumo.prediction.analysis runs the
models: `analyse`, `compare`, `report`). What the page shows of their results: `decision_panel`
(the banner and each model's verdict with its threshold and measured limits), `heatmap_caption`,
`details_table`, and `models_table` and `model_summary` (the About tab), all HTML or Markdown built from the
results the API returns, so the page and the API never tell different stories.
"""

from __future__ import annotations

import base64
import functools
import html
import io
from pathlib import Path

from PIL import Image

from ..hub import model_folder
from ..explain.overlays import colour_scale
from ..prediction.predictor import Predictor
from .verdicts import (
    HEATMAP_CAVEAT,
    MeasuredLimits,
    agreement,
    explained_class_warning,
    gives_verdict,
    shown_verdict,
    limits_sentence,
    site_sentence,
    measured_limits,
    out_of_distribution_warning,
    percent,
    percent_pair,
    targets_not_met,
    verdict,
)


def user_message(error: Exception, path) -> str:
    """The error as the person who uploaded the file knows it: its own name, not the server's copy of it."""
    return str(error).replace(str(path), Path(path).name)



# What the page shows. The classes below are styled by PAGE_CSS; text comes from pneumo.demo.verdicts.

PAGE_CSS = """
.pneumo-decisions { display: flex; flex-direction: column; gap: 0.75rem; }
.pneumo-banner { display: flex; gap: 0.75rem; align-items: flex-start; padding: 0.75rem 1rem; border-radius: 8px;
  border: 2px solid; line-height: 1.4; }
.pneumo-banner .pneumo-icon { font-size: 1.5rem; line-height: 1; }
.pneumo-banner-disagree, .pneumo-banner-warning { background: #fff4e5; border-color: #d9480f; color: #5c1a00; }
.pneumo-banner-agree { background: #e7f1fb; border-color: #1c64b0; color: #0b2e55; }
.pneumo-verdicts { display: grid; grid-template-columns: repeat(auto-fit, minmax(280px, 1fr)); gap: 0.75rem; }
.pneumo-verdict { border: 1px solid #c9ced6; border-radius: 8px; padding: 0.6rem 0.8rem; line-height: 1.35; }
.pneumo-verdict-head { display: flex; justify-content: space-between; align-items: baseline; gap: 0.5rem; }
.pneumo-model { font-weight: 600; }
.pneumo-decision { font-weight: 600; font-size: 1.25rem; padding: 0 0.5rem; border-radius: 4px; }
.pneumo-positive .pneumo-decision { background: #fde2e1; color: #8a1c12; }
.pneumo-negative .pneumo-decision { background: #ddf3e4; color: #145c2e; }
.pneumo-unsure .pneumo-decision { background: #eceff3; color: #30343a; }
.pneumo-bar { position: relative; height: 10px; background: #e6e8eb; border-radius: 5px; margin: 0.45rem 0 0.2rem; }
.pneumo-bar-fill { position: absolute; left: 0; top: 0; bottom: 0; background: #5b6b7f; border-radius: 5px; }
.pneumo-bar-threshold { position: absolute; top: -4px; bottom: -4px; width: 3px; margin-left: -1px;
  background: #111; }
.pneumo-verdict-text { font-weight: 600; margin: 0.2rem 0; }
.pneumo-limits, .pneumo-caption, .pneumo-bar-legend { font-size: 0.88rem; margin: 0.2rem 0; }
.pneumo-bar-legend { color: #4a5360; }
.pneumo-caption img { width: 100%; height: 10px; display: block; }
.pneumo-scale { display: flex; justify-content: space-between; font-size: 0.8rem; }
.pneumo-heatmap-warning { color: #8a1c12; font-weight: 600; }
/* Tables (the About tab, the details) scroll sideways on a narrow screen rather than break words letter by letter
   ("P(NO RM AL)"). */
.gradio-container table { display: block; overflow-x: auto; max-width: 100%; }
.gradio-container th, .gradio-container td { white-space: nowrap; word-break: normal; overflow-wrap: normal; }
/* The first column (the model) stays in sight while a table scrolls sideways. */
.gradio-container td:first-child, .gradio-container th:first-child { position: sticky; left: 0;
  background: var(--background-fill-primary); }
/* A phone shows the verdicts first, together, and the banner right below them. */
@media (max-width: 640px) {
  .pneumo-decisions .pneumo-verdicts { order: -1; }
  .pneumo-verdict, .pneumo-banner { padding: 0.5rem 0.6rem; font-size: 0.9rem; }
  .pneumo-decision { font-size: 1.1rem; }
}
"""


def _banner(kind: str, icon: str, headline: str, text: str = "") -> str:
    return (f'<div class="pneumo-banner pneumo-banner-{kind}" role="{"alert" if kind != "agree" else "status"}">'
            f'<span class="pneumo-icon" aria-hidden="true">{icon}</span><div><strong>{html.escape(headline)}</strong>'
            + (f" {html.escape(text)}" if text else "") + "</div></div>")


def bar_legend(positive: str, shown: str, threshold: str) -> str:
    return f"Bar: P({positive}) {shown}. Tick: this model's threshold, {threshold}."


def verdict_card(name: str, result: dict, limits: MeasuredLimits | None) -> str:
    """One model's decision, its probability against its threshold (bar, legend and words), and its measured
    limits; for an image the model finds unlike its training X-rays, no decision and no bar, only why."""
    head = (f'<div class="pneumo-verdict-head"><span class="pneumo-model">{html.escape(name)}</span>'
            f'<span class="pneumo-decision">{html.escape(shown_verdict(result))}</span></div>')
    if not gives_verdict(result):
        return (f'<div class="pneumo-verdict pneumo-unsure" data-model="{html.escape(name)}">{head}'
                f'<p class="pneumo-verdict-text">{html.escape(verdict(result))}</p></div>')
    positive = result["positive_class"]
    probability = result["probabilities"][positive]
    shown, threshold = percent_pair(probability, result["threshold"])
    side = "pneumo-positive" if result["label"] == positive else "pneumo-negative"
    return (f'<div class="pneumo-verdict {side}" data-model="{html.escape(name)}">{head}'
            f'<div class="pneumo-bar" role="img" aria-label="P({html.escape(positive)}) {shown}, threshold {threshold}">'
            f'<div class="pneumo-bar-fill" style="width:{probability * 100:.1f}%"></div>'
            f'<div class="pneumo-bar-threshold" style="left:{result["threshold"] * 100:.1f}%"></div></div>'
            f'<p class="pneumo-bar-legend">{html.escape(bar_legend(positive, shown, threshold))}</p>'
            f'<p class="pneumo-verdict-text">{html.escape(verdict(result))}</p>'
            f'<p class="pneumo-limits">{html.escape(limits_sentence(limits))}</p>'
            + (f'<p class="pneumo-site">{html.escape(site_sentence(result.get("site_adaptation")))}</p>'
               if result.get("site_adaptation") else "") + '</div>')


def banner_text(results: dict[str, dict], limits: dict[str, MeasuredLimits | None]) -> str:
    """The API's banner (Markdown): the out-of-distribution warning where a model gives no verdict, else whether
    the models agree and why that is no proof."""
    if warning := out_of_distribution_warning(results):
        return f"⚠️ **{warning}**"
    agreed = agreement(results, limits)
    return f"{'' if agreed.agree else '⚠️ '}**{agreed.headline}** {agreed.caveat}"


def decision_panel(results: dict[str, dict], limits: dict[str, MeasuredLimits | None]) -> str:
    """The top of the results (HTML): warnings, whether the models agree, then every model's verdict card."""
    parts = []
    if warning := out_of_distribution_warning(results):
        parts.append(_banner("warning", "⚠️", warning))
    if len(results) > 1 and (agreed := agreement(results, limits)):
        parts.append(_banner("agree", "ℹ️", agreed.headline, agreed.caveat) if agreed.agree else
                     _banner("disagree", "⚠️", agreed.headline, agreed.caveat))
    cards = "".join(verdict_card(name, result, limits.get(name)) for name, result in results.items())
    parts.append(f'<div class="pneumo-verdicts">{cards}</div>')
    return f'<div class="pneumo-decisions">{"".join(parts)}</div>'


@functools.lru_cache(maxsize=1)
def _colour_scale_uri() -> str:
    buffer = io.BytesIO()
    Image.fromarray(colour_scale()).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def heatmap_caption(result: dict) -> str:
    """Under a heatmap (HTML): its colour scale and method, what a heatmap does not show, and a warning when
    the class it explains has almost no probability; where the map is empty, why there is none instead."""
    if note := result.get("heatmap_note"):
        return f'<div class="pneumo-caption"><p class="pneumo-heatmap-warning">{html.escape(note)}</p></div>'
    warning = explained_class_warning(result)
    return (f'<div class="pneumo-caption"><img src="{_colour_scale_uri()}" alt="colour scale from blue (low) to red '
            f'(high)"><div class="pneumo-scale"><span>low</span><span>contribution to '
            f'{html.escape(result["explained_class"])} ({html.escape(result["heatmap_method"])})</span>'
            f"<span>high</span></div><p>{html.escape(HEATMAP_CAVEAT)}</p>"
            + (f'<p class="pneumo-heatmap-warning">⚠️ {html.escape(warning)}</p>' if warning else "") + "</div>")


def details_table(results: dict[str, dict]) -> str:
    """The results as a small Markdown table: model, revision, input size, threshold, probabilities, seconds."""
    class_names = list(next(iter(results.values()))["probabilities"]) if results else []
    lines = ["| Model | Revision | Input | Threshold | " + " | ".join(f"P({name})" for name in class_names)
             + " | Seconds |", "|---|---|---|---|" + "---|" * len(class_names) + "---|"]
    for name, result in results.items():
        height, width = result["input_size"]
        lines.append(f"| {name} | {result.get('revision') or 'bundled'} | {height}x{width} px | "
                     f"{percent(result['threshold'])} | "
                     + " | ".join(percent(result["probabilities"][c]) for c in class_names)
                     + f" | {result['seconds']:.2f} |")
    return "\n".join(lines)


def _metric(metrics: dict | None, key: str) -> str:
    value = (metrics or {}).get(key)
    return "n/a" if value is None else f"{value:.3f}"


# The About tab's table: (column, metrics key) for each split a model folder records.
ABOUT_METRICS = [("Accuracy", "accuracy"), ("Sensitivity", "sensitivity"), ("Specificity", "specificity"),
                 ("Precision", "precision"), ("ROC-AUC", "roc_auc"), ("ECE", "expected_calibration_error")]
ABOUT_SPLITS = ("validation", "test")  # always shown ("n/a" when not measured); other recorded splits follow


def models_table(predictors: dict[str, Predictor]) -> str:
    """Every model in one Markdown table: what it is, what it sees, how it draws heatmaps, and its metrics on
    each split its folder records (validation and the official test set, n/a where not measured)."""
    lines = ["| Model | Architecture | Input | Heatmap | Split (images) | "
             + " | ".join(column for column, _ in ABOUT_METRICS) + " |",
             "|---|---|---|---|---|" + "---|" * len(ABOUT_METRICS)]
    for name, predictor in predictors.items():
        recorded = model_folder.read_all_metrics(predictor.folder)
        splits = [*ABOUT_SPLITS, *(split for split in recorded if split not in ABOUT_SPLITS)]
        about = (f"`{predictor.config['architecture']}`", f"{predictor.height}x{predictor.width} px",
                 predictor.explanation_method)
        for row, split in enumerate(splits):
            metrics = recorded.get(split)
            images = f" ({metrics['n_images']})" if metrics and metrics.get("n_images") else ""
            lines.append(f"| {name} | " + " | ".join(about if row == 0 else ("", "", "")) + f" | {split}{images} | "
                         + " | ".join(_metric(metrics, key) for _, key in ABOUT_METRICS) + " |")
    return "\n".join(lines)


def model_summary(predictor: Predictor) -> str:
    """A model for the About tab (Markdown, under its name): what it is, its limits in words and the targets it
    misses (its metrics are in `models_table`)."""
    config = predictor.config
    limits = measured_limits(predictor.folder, predictor.class_names, predictor.positive_class)
    lines = [f"{config.get('description') or config['architecture']}; it sees the X-ray at "
             f"{predictor.height}x{predictor.width} pixels; threshold {predictor.threshold:.3f}; calibration "
             f"temperature {predictor.calibration.temperature:.2f}; heatmaps by {predictor.explanation_method}.",
             "", f"**In plain words:** {limits_sentence(limits)}"]
    if missed := targets_not_met(predictor.folder):
        lines += ["", f"**Targets not met on the official test set:** {', '.join(missed)}."]
    return "\n".join(lines)
