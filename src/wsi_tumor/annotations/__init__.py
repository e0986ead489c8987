"""Lesion annotation formats and polygon geometry, below both ``data`` and ``evaluation``.

:mod:`~wsi_tumor.annotations.formats` reads and writes ASAP XML and NCRF JSON;
:mod:`~wsi_tumor.annotations.polygons` tests points against polygons and rasterises them.
"""
