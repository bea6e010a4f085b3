"""Constants of the files this project writes and reads; no heavy imports, so every layer can use them."""
from __future__ import annotations

from pathlib import Path

METADATA_KEY = b"mamol"
"""Arrow schema-metadata key holding each file's JSON metadata."""

CONVERSION_KEY = "conversion_id"
"""The metadata key holding a file's conversion id (:mod:`mamol.conversion.writing`)."""

REMOTE_FORMAT = "mamol-remote"
"""``format`` recorded in the metadata of every remote-scene Arrow file."""
REMOTE_FORMAT_VERSION = 1
"""Bumped when the layout of remote Arrow files changes; readers refuse other versions."""

MODALITY_ORDER = ("hsi", "lidar", "sar", "msi")
"""Canonical order of remote modalities: the missing-type code order follows it."""

NATURAL_MODALITIES = ("text", "image")
"""Code order of image–text data: code 1 = text missing, 2 = image missing."""

NORMALIZATIONS = ("minmax", "zscore", "none")
"""Per-band normalisations of remote scenes."""
NAN_POLICIES = ("refuse", "fill")
"""What the remote converter does with NaN/Inf in a cube."""

SHIPPED_DIR = Path(__file__).resolve().with_name("shipped")
"""Split and class files that raw downloads lack, shipped with the package (``datasets/`` links to them)."""
