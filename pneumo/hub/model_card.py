"""The model card (README.md) of a model folder, written from its pneumo.json and metrics files.

Every number in the card is read from a file the training or evaluation code wrote; none is typed in.
"""

from __future__ import annotations

from pathlib import Path

from ..explain import methods
from . import model_folder
from ..site.adabn import why_not_adapted
from ..prediction.calibration import Calibration
from ..files import write_text

METRIC_ROWS = [("accuracy", "Accuracy"), ("sensitivity", "Sensitivity (PNEUMONIA recall)"),
               ("specificity", "Specificity (NORMAL recall)"), ("precision", "Precision (PNEUMONIA)"),
               ("f1", "F1 (PNEUMONIA)"), ("roc_auc", "ROC-AUC"),
               ("expected_calibration_error", "Expected calibration error")]
SPLITS = [("validation", "Validation (patient-level split of train/)"),
          ("holdout_earliest", "Earliest-acquisitions hold-out of train/"),
          ("site_holdout", "Site hold-out (after the site refit)"),
          ("test", "Official test set (624 images, touched once)")]


def read_metrics(folder: Path) -> dict:
    """{split: metrics} for the table: validation, the hold-out recorded with it, and test."""
    found = model_folder.read_all_metrics(folder)
    holdout = (found.get("validation") or {}).get("holdout_earliest")
    if holdout:
        found["holdout_earliest"] = holdout
    return {key: found[key] for key, _ in SPLITS if key in found}


def _format(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _with_interval(metrics: dict, key: str) -> str:
    interval = (metrics.get("confidence_intervals_95") or {}).get(key)
    if metrics.get(key) is None or not interval:
        return _format(metrics.get(key))
    return f"{metrics[key]:.3f} ({interval[0]:.3f}-{interval[1]:.3f})"


def metrics_table(metrics: dict) -> str:
    splits = [(key, title) for key, title in SPLITS if key in metrics]
    lines = ["| Metric | " + " | ".join(title for _, title in splits) + " |",
             "|---|" + "---|" * len(splits)]
    for key, title in METRIC_ROWS:
        lines.append(f"| {title} | " + " | ".join(_with_interval(metrics[s], key) for s, _ in splits) + " |")
    lines.append("| Images | " + " | ".join(str(metrics[s]["n_images"]) for s, _ in splits) + " |")
    if any(metrics[s].get("confidence_intervals_95") for s, _ in splits):
        lines.append("\nIn brackets: 95% bootstrap confidence intervals (1,000 resamples of the images).")
    for split, title in splits:
        (tn, fp), (fn, tp) = metrics[split]["confusion_matrix"]
        lines.append(f"\n{title}: confusion matrix at threshold {metrics[split]['threshold']:.3f}: "
                     f"TN {tn}, FP {fp}, FN {fn}, TP {tp}.")
    return "\n".join(lines)


def subgroup_table(metrics: dict) -> str:
    """Per subgroup and split: images, fraction classified correctly, AUC against the other class."""
    splits = [(key, title) for key, title in SPLITS if metrics.get(key, {}).get("subgroups")]
    if not splits:
        return ""
    names = sorted({name for key, _ in splits for name in metrics[key]["subgroups"]})
    lines = ["| Subgroup | " + " | ".join(title for _, title in splits) + " |", "|---|" + "---|" * len(splits)]
    for name in names:
        cells = []
        for key, _ in splits:
            entry = metrics[key]["subgroups"].get(name)
            cells.append("-" if entry is None else
                         f"n={entry['n_images']}, correct {entry['accuracy']:.3f}, "
                         f"AUC {_format(entry.get('roc_auc_vs_other_class'))}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return ("\n\n### By subgroup\nFrom the file names: bacterial and viral pneumonia, and the two acquisition "
            "series of normal X-rays. \"correct\" is the fraction of the subgroup classified correctly at the "
            "threshold; the AUC compares the subgroup with every image of the other class.\n\n" + "\n".join(lines))


def robustness_text(folder: Path) -> str:
    """The acquisition-perturbation suite on the validation split (metrics_robustness.csv), if recorded."""
    import pandas as pd

    path = Path(folder) / model_folder.ROBUSTNESS_FILE
    if not path.exists():
        return ""
    table = pd.read_csv(path)
    clean = table[table.perturbation == "clean"].iloc[0]
    perturbed = table[table.perturbation != "clean"]
    worst = perturbed.loc[perturbed.auc_change.idxmin()]
    lowest_specificity = perturbed.loc[perturbed.specificity.idxmin()]
    lowest_sensitivity = perturbed.loc[perturbed.sensitivity.idxmin()]

    def name(row) -> str:
        return f"{row.perturbation} {row.strength}"

    return (f"\n\n### Under acquisition perturbations (validation split)\n`pneumo robustness` scores the "
            f"validation split under {len(perturbed)} seeded perturbations "
            f"({', '.join(dict.fromkeys(perturbed.perturbation.str.replace('_', ' ')))}; "
            f"{perturbed.strength.nunique()} strengths each; `{model_folder.ROBUSTNESS_FILE}`). "
            f"Clean ROC-AUC {clean.roc_auc:.3f}; the largest AUC change is {worst.auc_change:+.3f} "
            f"({name(worst)}); the lowest specificity at the threshold {lowest_specificity.specificity:.3f} "
            f"({name(lowest_specificity)}) and the lowest sensitivity {lowest_sensitivity.sensitivity:.3f} "
            f"({name(lowest_sensitivity)}).")


HUB_DATASET = "hf-vision/chest-xray-pneumonia"  # the same Kermany et al. release, CC BY 4.0
HUB_METRICS = [("accuracy", "accuracy", "Accuracy"), ("roc_auc", "roc_auc", "ROC-AUC"),
               ("sensitivity", "recall", "Sensitivity"), ("specificity", "specificity", "Specificity"),
               ("precision", "precision", "Precision"), ("f1", "f1", "F1")]


def hub_metadata(config: dict, metrics: dict):
    """The card's YAML metadata, with `model-index` results from the folder's metrics files.

    Only the official test set goes into `model-index`: it is the public dataset's `test` split. The
    validation split and the hold-out are patient-level hold-outs of its `train` split (the public
    `validation` split is a different set of 16 images), so they stay in the card's text and tables.
    """
    from huggingface_hub import EvalResult, ModelCardData

    results = [
        EvalResult(task_type="image-classification", task_name="Pneumonia detection (pediatric chest X-ray)",
                   dataset_type=HUB_DATASET, dataset_name="Chest X-Ray Images (Pneumonia), Kermany et al. 2018",
                   dataset_split=split, metric_type=metric_type, metric_name=name, metric_value=round(values[key], 4))
        for split, values in metrics.items() if split == "test"
        for key, metric_type, name in HUB_METRICS if values.get(key) is not None
    ]
    method_tag = methods.display_name(methods.settings(config)).lower().replace(" ", "-")
    return ModelCardData(
        license="cc-by-4.0", library_name="keras", pipeline_tag="image-classification",
        tags=["medical-imaging", "chest-x-ray", "pneumonia", method_tag, "pneumo", config["architecture"]],
        datasets=[HUB_DATASET], model_name=f"pneumo-{config['name']}", eval_results=results or None)


def operating_points_text(config: dict) -> str:
    points = config.get("operating_points")
    if not points:
        return ""
    listed = ", ".join(f"{name} {value:.3f}" for name, value in points.items())
    return (f" The folder records these operating points, all fitted on the validation split: {listed}; "
            f"the default is `{config.get('operating_point', 'youden')}`. `batch_eval.py --threshold` and the "
            "config's `threshold` choose another.")


def training_notes_text(training: dict) -> str:
    backend = training.get("keras_backend", "tensorflow")
    trained_on = f" Trained with Keras' {backend} backend." if backend != "tensorflow" else ""
    notes = training.get("notes", "")
    return trained_on + (f" {notes}" if notes else "")


def render_model_card(folder: Path) -> str:
    if model_folder.is_ensemble(folder):
        return render_ensemble_card(folder)
    config = model_folder.read_config(folder)
    metrics = read_metrics(folder)
    training = config["training"]
    size = config["input"]["height"]
    heatmaps = methods.settings(config)
    front_matter = "---\n" + hub_metadata(config, {k: v for k, v in metrics.items() if k != "holdout_earliest"}).to_yaml() + "\n---"
    weights_note = training.get("weights_note", "")
    scratch_note = f"\n{weights_note}\n" if weights_note else ""
    intensity = config.get("preprocessing", {}).get("intensity", {"method": "decoder_scale"})
    metrics_section = ((metrics_table(metrics) + subgroup_table(metrics)) if metrics else "No metrics recorded yet."
                       ) + robustness_text(folder)
    criterion = training.get("selection_criterion")
    selection = f"best {criterion['name']}: {criterion['description']}" if criterion else "best validation ROC-AUC"
    return f"""{front_matter}

# pneumo {config['name']}: pneumonia vs normal on pediatric chest X-rays

{config['description']}. Input {size}x{size}x3 in [0, 1] (a grayscale X-ray repeated over 3 channels);
intensity normalisation after decoding: `{intensity['method']}`{smoothing_text(config)}.
Part of pneumo, research and teaching software.
{scratch_note}
## Not a medical device
For research and teaching only. It has not been cleared or approved by any regulator, must not be used
to diagnose or to make treatment decisions, and does not replace a radiologist.

## Intended use
Show students and researchers how a neural network separates pneumonia from normal pediatric frontal
chest X-rays, and where in the image its evidence lies ({methods.display_name(heatmaps)}). Out of scope:
adults, lateral views, other findings (effusion, nodules, tuberculosis, COVID-19), images from other
hospitals without local validation.

## Training data
{training['data']}: pediatric patients aged 1 to 5 from one hospital (Guangzhou Women and Children's
Medical Center), every image resized to 224x224. {training['train_images']} training images
({training['train_patients']} patients) and {training['validation_images']} validation images
({training['validation_patients']} patients), split by patient with no patient on both sides
({training['validation_split']}). Class counts (train): {training['class_counts_train']}.

## Training recipe
{training['optimizer']}, learning rate {training['learning_rate']}, batch {training['batch_size']},
{training['loss']}, {training['precision']}; {training['epochs_run']} epochs run, weights from epoch
{training['best_epoch']} ({selection}). Augmentation: {training['augmentation']}.{training_notes_text(training)}

## Decision threshold and calibration
Probabilities are `{Calibration.from_config(config['calibration']).describe()}`, fitted on
{config['calibration'].get('fitted_on', 'validation split').replace('validation split', 'the validation split')}. PNEUMONIA is predicted when its probability is at least
{config['threshold']:.3f} ({config['threshold_method']}).{operating_points_text(config)}{site_calibration_text(config)}{site_adaptation_text(config)}{adaptation_text(config)}

## Metrics
{metrics_section}{site_eval_text(folder)}

## Limitations
- One hospital, one pediatric population, images already downsized to 224x224: expect lower accuracy
  elsewhere. The official test set is known to differ from train/ (more normals, other acquisition); the
  gap between the validation and test columns above measures that shift.
- Labels are image-level (bacterial and viral pneumonia merged into PNEUMONIA) and were graded by
  experts without follow-up; some are wrong.
- The heatmaps show where the model looked, not proof of pathology; they can highlight text markers or
  borders. They are {methods.describe(heatmaps)}.
- {ood_limitation(config)}

## Files
{network_files_text(config)} (input size,
preprocessing, class names, threshold, calibration), `metrics_*.json`, `history.csv`,
`training_curves.png`, `data_split.csv` (which training images were held out for validation).
"""


def render_ensemble_card(folder: Path) -> str:
    """The card of an ensemble folder (pneumo.training.ensemble): its members, its own fit and its metrics."""
    config = model_folder.read_ensemble_config(folder)
    metrics = read_metrics(folder)
    criterion = config["training"]["selection_criterion"]
    members = "\n".join(f"- `{member['name']}` (`{member['folder']}`, weights SHA-256 {member['model_sha256'][:12]}..., "
                        f"input {member['input']['height']}x{member['input']['width']})" for member in config["members"])
    metrics_section = (metrics_table(metrics) + subgroup_table(metrics)) if metrics else "No metrics recorded yet."
    return f"""# pneumo {config['name']}: an ensemble of {len(config['members'])} models

{config['description'][0].upper() + config['description'][1:]}. Part of pneumo, research and teaching software.

## Not a medical device
For research and teaching only. It has not been cleared or approved by any regulator, must not be used
to diagnose or to make treatment decisions, and does not replace a radiologist.

## Members
{members}

Each member reads the X-ray through its own preprocessing at its own input size, as it does alone; the
folder holds no network. A member whose weights differ from the hash above is refused.

## Decision threshold and calibration
The members' calibrated P(PNEUMONIA) are averaged; the mean is read as two-class log-probabilities and
recalibrated: `{Calibration.from_config(config['calibration']).describe()}`, fitted on the shared validation
split. PNEUMONIA is predicted when the result is at least {config['threshold']:.3f}
({config['threshold_method']}).{operating_points_text(config)}

Selection criterion ({criterion['description']}): {criterion['criterion']:.4f}. `pneumo ensemble`
prints it for every member and every mean of two or more members.

## Metrics
{metrics_section}

## Heatmaps and out-of-distribution check
The heatmap is the {config['explanation']['description']} of the same class, each resized to the largest
member's input, the mean scaled to [0, 1]: it shows where the members looked together, not proof of
pathology. The out-of-distribution score is the mean of the members' scores (each is 1 at its own threshold).

## Limitations
Those of its members (their model cards): one hospital, one pediatric population, image-level labels. The
official test set is known to differ from train/; the gap between the validation and test columns above
measures that shift. Averaging models trained on the same data does not remove the errors they share.
"""


def site_calibration_text(config: dict) -> str:
    site = config.get("site_calibration")
    if not site:
        return ""
    ece = site["holdout_expected_calibration_error"]
    return (f"\n\n**Refitted to a site** (`pneumo calibrate`, {site['date']}): the network of "
            f"`{site['source']}` (SHA-256 {site['source_model_sha256'][:12]}...) unchanged, its calibration "
            f"({Calibration.from_config(site['source_calibration']).describe()} before) and operating points "
            f"({site['source_threshold']:.3f} before) "
            f"fitted on {site['fitting_images']} images ({site['fitting_patients']} patients) of `{site['data']}`, "
            f"measured on a patient-level hold-out of {site['holdout_images']} images ({site['holdout_patients']} "
            f"patients): expected calibration error {ece['before']:.3f} before, {ece['after']:.3f} after. The "
            "training and validation sections describe the source model.")


def site_adaptation_text(config: dict) -> str:
    site = config.get("site_adaptation")
    if not site:
        return ""
    if "operating_point" not in site:  # adapted by pneumo 0.2 (the batch-norm step only)
        return (f"\n\n**Adapted to a site** (`pneumo adapt`, {site['date']}): the network of `{site['source']}` "
                f"(SHA-256 {site['source_model_sha256'][:12]}...) with its batch-norm statistics re-estimated on the "
                f"{site['image_count']} readable images of `{site['images']}` (labels unused; {site['skipped_files']} "
                "files skipped), every other weight unchanged. It decides with the calibration and threshold its "
                "source fitted for an adapted network. The training and validation sections, and any metrics below, "
                "describe the source model.")
    point, batch_norm = site["operating_point"], site["batch_norm"]
    source_hash = f" (SHA-256 {site['source_model_sha256'][:12]}...)" if site.get("source_model_sha256") else ""
    step = ("its batch-norm statistics re-estimated on them" if batch_norm["applied"]
            else f"no batch-norm step ({batch_norm['why_not']})")
    if point["verdict"] == "trusted":
        low, high = point["prevalence_interval"]
        decided = (f"Its site operating point, fitted on the same images without labels: estimated prevalence "
                   f"{point['prevalence']:.2f} (95% interval {low:.2f}-{high:.2f}), the probability shown is the "
                   f"mixture's posterior at the site, and the threshold is {point['threshold']:.3f} on it (estimated "
                   f"sensitivity {point['estimated_sensitivity']:.2f}, specificity {point['estimated_specificity']:.2f}).")
    else:
        decided = (f"Its site operating point was refused ({point['reason']}), so it decides with the threshold it "
                   f"had ({point['threshold_without_it']:.3f}).")
    return (f"\n\n**Adapted to a site without labels** (`pneumo adapt`, {site['date']}): `{site['source']}`"
            f"{source_hash} on the {site['image_count']} readable images of `{site['images']}` "
            f"({site.get('skipped_files', 0)} files skipped), {step}. {decided} The training and validation "
            "sections, and any metrics below, describe the source model.")


def adaptation_text(config: dict) -> str:
    block = config.get("adaptation")
    if not block or config.get("site_adaptation"):
        return ""
    refused = why_not_adapted(block)
    if refused:
        return f"\n\n**Not adapted to sites** (`pneumo adapt` refuses it): {refused}."
    measured = block["validation"]
    return (f"\n\n**Once adapted to a site** (`pneumo adapt`: batch-norm statistics re-estimated on the "
            f"site's own X-rays, without labels) it decides with `{Calibration.from_config(block['calibration']).describe()}` "
            f"and threshold {block['threshold']:.3f}, fitted on the validation split after the same re-estimation on "
            f"its clean images (validation sensitivity {measured['sensitivity']:.3f}, specificity "
            f"{measured['specificity']:.3f}, ECE {measured['expected_calibration_error']:.3f}).")


def site_eval_text(folder: Path) -> str:
    """The settings of `pneumo site-eval --record` (the official test set), at each prevalence measured."""
    kept = model_folder.read_site_eval(folder)
    if not kept:
        return ""
    lines = ["", "", "### Adapted and refitted on the official test set (cross-fitted)"]
    for key, results in sorted(kept.items(), key=lambda item: item[0] != "own"):
        mix = ("at the folder's own prevalence" if key == "own"
               else f"with one class thinned to prevalence {float(key):g} (seeded)")
        lines += ["", (f"`pneumo site-eval` ({results['date'][:10]}), {mix}: the {results['images']} images split by "
                       f"patient into halves of {results['halves'][0]} and {results['halves'][1]}; each half adapts "
                       "(images only) and refits (labels) the model that scores the other, and the two scored halves "
                       "are pooled. 95% bootstrap intervals in brackets."), "",
                  "| Setting | Accuracy | Sensitivity | Specificity | ROC-AUC | ECE |", "|---|---|---|---|---|---|"]
        for metrics in results["settings"].values():
            cells = " | ".join(_with_interval(metrics, key) for key in
                               ("accuracy", "sensitivity", "specificity", "roc_auc", "expected_calibration_error"))
            lines.append(f"| {metrics['setting']} | {cells} |")
    return "\n".join(lines)


def ood_limitation(config: dict) -> str:
    block = config.get("out_of_distribution")
    if not block and config.get("site_adaptation"):
        return ("Input is treated as a frontal chest X-ray whatever it is: an adapted network has no "
                "out-of-distribution check (its source's reference holds the source network's features; through the "
                "adapted network it flags almost every X-ray).")
    if not block:
        return ("Input is treated as a frontal chest X-ray whatever it is; this folder has no check for images "
                "that are something else (`pneumo ood` adds one).")
    return (f"An out-of-distribution check flags images unlike the training X-rays: the Mahalanobis distance "
            f"of the `{block['layer']}` features, with a threshold that flags "
            f"{block['flagged_fraction_target']:.0%} of the validation X-rays. It is a heuristic: it catches "
            "photos, documents and other scans, not every unusual X-ray, and it says nothing about image quality.")


def network_files_text(config: dict) -> str:
    if "model_file" in config:  # a pneumo 0.1 folder
        return f"`{config['model_file']}` (Keras 3, loads with `safe_mode=True`), `config.json`"
    return ("`config.json`, `metadata.json` and `model.weights.h5` (the network in Keras 3's directory format: "
            "`keras.saving.load_model(\"hf://OWNER/NAME\")` loads it), `pneumo.json`")


def smoothing_text(config: dict) -> str:
    smoothing = (config.get("preprocessing") or {}).get("smoothing")
    if not smoothing:
        return ""
    return f"; after the resize, a Gaussian smoothing (sigma {smoothing['sigma']:g}, in pixels of the input)"


def write_model_card(folder) -> None:
    write_text(Path(folder) / model_folder.CARD_FILE, render_model_card(Path(folder)))


SPLIT_NAMES = {"test": "official test"}  # a split's name in the results table, where it differs


def results_table(folders) -> str:
    """A Markdown table of every model folder's validation, earliest-acquisitions hold-out and test metrics (for
    README and model_card.md)."""
    columns = ["accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc", "expected_calibration_error"]
    lines = ["| Model | Split | Images | Threshold | Accuracy | Sensitivity | Specificity | Precision | F1 | ROC-AUC | ECE |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for folder in map(Path, folders):
        for split, values in model_folder.read_all_metrics(folder).items():
            rows = [(split, values)]
            if "holdout_earliest" in values:  # recorded inside the validation metrics by export
                rows.append(("earliest-acquisitions hold-out", values["holdout_earliest"]))
            for name, row in rows:
                cells = " | ".join(_format(row.get(c)) for c in columns)
                lines.append(f"| {folder.name} | {SPLIT_NAMES.get(name, name)} | {row['n_images']} | "
                             f"{row['threshold']:.3f} | {cells} |")
    return "\n".join(lines)



def site_eval_table(folders) -> str:
    """A Markdown table of the settings of `pneumo site-eval --record` on the official test set, at each
    prevalence measured, for every model folder that has them (for README and model_card.md)."""
    columns = ["accuracy", "sensitivity", "specificity", "roc_auc", "expected_calibration_error"]
    lines = ["| Model | Prevalence | Setting | Accuracy | Sensitivity | Specificity | ROC-AUC | ECE |",
             "|---|---|---|---|---|---|---|---|"]
    for folder in map(Path, folders):
        for key, results in sorted(model_folder.read_site_eval(folder).items(), key=lambda item: item[0] != "own"):
            mix = "own" if key == "own" else key
            for metrics in results["settings"].values():
                lines.append(f"| {folder.name} | {mix} | {metrics['setting']} | "
                             + " | ".join(_with_interval(metrics, key) for key in columns) + " |")
    return "\n".join(lines)


def headline_table(folders) -> str:
    """One row per model folder: the official test set out of the box, and at that set taken as a new site
    (`pneumo site-eval --record`, at its own prevalence): label-free as `pneumo adapt` decides, and refit with
    labels. Sensitivity / specificity / ECE in each cell."""
    lines = ["| Model | Test ROC-AUC | Out of the box | New site, no labels (pneumo adapt) | New site, refit with labels |",
             "|---|---|---|---|---|"]

    def cell(metrics: dict | None) -> str:
        if not metrics:
            return "not measured"
        return (f"{metrics['sensitivity']:.2f} / {metrics['specificity']:.2f} / "
                f"{metrics['expected_calibration_error']:.2f}")

    for folder in map(Path, folders):
        test = model_folder.read_metrics(folder, "test") or {}
        site = model_folder.read_site_eval(folder).get("own", {}).get("settings", {})
        lines.append(f"| {folder.name} | {_format(test.get('roc_auc'))} | {cell(test)} | "
                     f"{cell(site.get('label_free_guarded'))} | {cell(site.get('refit'))} |")
    return "\n".join(lines)
