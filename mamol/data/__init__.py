"""Data: .mat reading, Arrow conversion, the dataset catalogue, datasets and the LightningDataModule.

The remote converter (``mamol.data.convert_remote`` with ``scenes`` and ``splits``) stays free of torch; each
image–text dataset's file holds its converter and its Dataset class.
"""
