"""Data, the reading side: the dataset catalogue, Arrow reading, the datasets and the LightningDataModule.

Writing the Arrow files (readers of raw data, normalisation, splits, patch cutting) is :mod:`mamol.conversion`,
which imports from here, never the reverse; what both read (the known scenes, file-format constants, Arrow
file helpers) lives here in light modules.
"""
