"""MaMOL models: frozen CLIP backbone, MaMOL adapter, modality tokenizers, remote and image-text classifiers."""
