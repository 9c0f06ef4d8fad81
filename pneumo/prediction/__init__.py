"""A model folder turned into calibrated predictions: one network (`predictor`), an ensemble of them
(`ensemble_predictor`), their calibration and threshold (`calibration`), the out-of-distribution check (`ood`), and
one X-ray through several models with its heatmap overlays (`analysis`)."""
