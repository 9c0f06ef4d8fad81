"""Which method draws a model's heatmaps, as its folder's pneumo.json records it.

    "explanation": {"method": "gradcam", "layer": "last_conv_features"}
    "explanation": {"method": "integrated_gradients", "steps": 32, "baseline": "black"}

Grad-CAM (pneumo.explain.gradcam) needs a convolutional map; integrated gradients (pneumo.explain.integrated_gradients)
need none and explain the row LSTM. Both answer `logits_and_heatmaps(image)` with the class scores, one
heatmap per class in [0, 1] and the pooled out-of-distribution features, so nothing that shows a heatmap
asks which method drew it. Folders exported before this block (pneumo 0.2) name only a `gradcam_layer`.
"""

from __future__ import annotations

GRADCAM, INTEGRATED_GRADIENTS = "gradcam", "integrated_gradients"
METHODS = {GRADCAM: "Grad-CAM", INTEGRATED_GRADIENTS: "integrated gradients"}  # as the page and the card name them
# Integrated gradients' defaults: Gauss-Legendre steps along the path from a black image.
STEPS = 32
BASELINE = "black"


def for_architecture(architecture) -> dict:
    """The block export writes for a model of `architecture` (a pneumo.networks.Architecture)."""
    if architecture.explanation == GRADCAM:
        return {"method": GRADCAM, "layer": architecture.gradcam_layer}
    return {"method": INTEGRATED_GRADIENTS, "steps": STEPS, "baseline": BASELINE}


def settings(config: dict) -> dict:
    """A folder's explanation block; a pneumo 0.2 folder's `gradcam_layer` read as Grad-CAM on that layer."""
    return config.get("explanation") or {"method": GRADCAM, "layer": config.get("gradcam_layer")}


def display_name(block: dict) -> str:
    return METHODS[block["method"]]


def describe(block: dict) -> str:
    """The method in a phrase, for the model card."""
    if block["method"] == GRADCAM:
        return (f"Grad-CAM (Selvaraju et al. 2017) on the `{block['layer']}` map, of each class's log-odds (its "
                "score less the other's)")
    return (f"integrated gradients (Sundararajan et al. 2017) from a {block.get('baseline', BASELINE)} image in "
            f"{block.get('steps', STEPS)} steps, which credit bright pixels (opacities, bone, markers) more than "
            "dark ones")

