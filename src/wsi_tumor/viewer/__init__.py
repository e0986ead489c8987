"""``wsi-view``: a local web viewer of a cohort's slides, maps and lesion candidates.

The top layer of the product: it reads what ``wsi-infer`` wrote (:mod:`cohort`), cuts
Deep Zoom tiles from the product's slide readers (:mod:`deepzoom`, :mod:`tiles`), draws the
map, candidates and ground truth over them (:mod:`layers`) and serves it all with Starlette
on uvicorn (:mod:`app`, :mod:`cli`); the pages run OpenSeadragon, shipped in ``static/``.
Nothing below imports it.
"""
