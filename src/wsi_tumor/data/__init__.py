"""Annotations (ASAP XML, NCRF JSON), pyramidal TIFF writing and the synthetic dataset.

Import the submodules: :mod:`~wsi_tumor.data.annotations` (reading and writing polygons),
:mod:`~wsi_tumor.data.polygons` (point tests, rasterisation), :mod:`~wsi_tumor.data.layout`
(dataset layout constants), :mod:`~wsi_tumor.data.tiff_writer`, and
:mod:`~wsi_tumor.data.synthetic` and :mod:`~wsi_tumor.data.hard` (``wsi-synth``).
"""
