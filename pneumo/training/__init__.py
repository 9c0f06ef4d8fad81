"""Training and release: the datasets and their patient-level split (`data`), acquisition perturbations
(`perturbations`), the selection criterion (`selection`), training (`train`), the model folder a run becomes
(`export`), its scoring (`evaluate`, `robustness`) and ensembles of released models (`ensemble`)."""
