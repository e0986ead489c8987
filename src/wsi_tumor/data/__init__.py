"""Pyramidal TIFF writing and the synthetic datasets (``wsi-synth``).

Import the submodules: :mod:`~wsi_tumor.data.layout` (dataset layout constants),
:mod:`~wsi_tumor.data.tiff_writer`, and :mod:`~wsi_tumor.data.synthetic` and
:mod:`~wsi_tumor.data.hard` (``wsi-synth``). Annotation formats live in
:mod:`wsi_tumor.annotations`.
"""
