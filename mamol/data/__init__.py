"""Data: scene/.mat reading, Arrow conversion, datasets and the LightningDataModule.

Submodules are imported on use (``mamol.data.remote_prepare`` stays free of torch for the converter).
"""
