"""Data: scene/.mat reading, Arrow conversion, datasets and the LightningDataModule.

Submodules are imported on use (``mamol.data.convert_remote`` stays free of torch for the converter).
"""
