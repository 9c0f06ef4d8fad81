"""The model folder and the Hugging Face Hub: what a trained model is on disk (`model_folder`, `model_card`), where
a model comes from (`loading`, `repos`, `bundled`), and publishing models and the demo (`commands`, `space`)."""
