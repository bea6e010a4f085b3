"""mamol: Missing-aware Mixture-of-LoRAs (MaMOL) on a frozen CLIP ViT, for remote sensing and image-text data."""

import warnings

# sacred 0.8.7 imports pkg_resources (hence setuptools<81 in requirements.txt), which warns on import: quiet for
# whichever of the package's Sacred modules (mamol.experiment, mamol.observers) is imported first.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

__version__ = "0.2.0"
