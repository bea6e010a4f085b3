"""Data: scene/.mat reading, Arrow conversion, datasets and the LightningDataModule.

Submodules are imported on use (the converters, ``mamol.data.convert_remote`` and the image–text ones built
on ``mamol.data.convert_natural``, stay free of torch).
"""
