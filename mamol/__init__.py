"""mamol: Missing-aware Mixture-of-LoRAs (MaMOL) on a frozen CLIP ViT, for remote sensing and image-text data."""

__version__ = "0.2.0"
