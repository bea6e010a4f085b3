"""Conversion: raw data -> Arrow files (the writing side; :mod:`mamol.data` is the reading side).

Remote scenes: :mod:`~mamol.conversion.layout` finds a scene folder's files, :mod:`~mamol.conversion.matfile`
reads ``.mat`` files, :mod:`~mamol.conversion.splits` draws the samples, :mod:`~mamol.conversion.normalise`
normalises band by band, :mod:`~mamol.conversion.patches` pads and cuts windows and
:mod:`~mamol.conversion.remote` writes the Arrow files. Image–text data: one converter per dataset
(:mod:`~mamol.conversion.mmimdb`, ...) on the shared :mod:`~mamol.conversion.natural`. Every conversion is
staged and put in place as one unit (:mod:`~mamol.conversion.writing`); :mod:`~mamol.conversion.converters`
registers a converter per dataset name; :mod:`~mamol.conversion.synthetic` writes synthetic scene folders.

This package may import :mod:`mamol.data` (the catalogue, the file formats, Arrow writing); the training side
never imports it. No torch import here: conversion stays light.
"""
