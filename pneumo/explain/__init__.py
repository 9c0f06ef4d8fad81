"""Where in the X-ray a model's evidence lies: Grad-CAM (`gradcam`) or integrated gradients
(`integrated_gradients`), as a model folder names its method (`methods`), the maps they share (`maps`) and the
heatmaps drawn over the image (`overlays`)."""
