"""GPU probe (issue 17): decode and network throughput of the dense and exact paths on one GPU.

One prepared, bounded run that anyone lent a GPU machine can start at once, from the
repository root, with no install (it needs only torch, torchvision, numpy and tifffile plus
``wsi_tumor.contract``, ``wsi_tumor.models`` and the numpy tiler ``wsi_tumor.serving.tiling``;
it runs under numpy 1 and 2)::

    python3 benchmarks/gpu_probe.py --device cuda --budget-s 420

It writes (or, with ``--slide``, reads) a JPEG-tiled TIFF with CAMELYON-like tiles, measures
tile decode on the CPU cores and on the GPU, runs the network both ways (exact 224 px patches,
dense regions) in several precisions, layouts, batch and region sizes, with and without CUDA
graphs and ``torch.compile``, checks every timed output against a CPU float32 reference, and
writes ``gpu_probe.json`` and ``gpu_probe.md`` with the projected end-to-end time of a 1M-cell
slide (docs/gpu_probe.md).

Modules, in the order a run uses them:

- :mod:`.config`: the plans (full, tiny), the projected slide's constants, report file names;
- :mod:`.budget`: the global deadline, each stage's slice of it and the watchdog;
- :mod:`.tiff_jpeg`: JPEG streams (JPEGTables split and merge) and the JPEG-tiled TIFF
  writer and tile reader;
- :mod:`.synthetic`: the H&E-like slide region and the ``slide`` stage;
- :mod:`.decode`: tile decode on the CPU and the device (``decode_cpu``, ``decode_device``);
- :mod:`.checks`: tolerances, grid comparisons and dense/exact agreement (numpy only);
- :mod:`.network`: variants (precision, channels-last, CUDA graphs, ``torch.compile``) and
  the exact and dense passes;
- :mod:`.reference`: the CPU float32 reference and the ``reference`` and ``check`` stages;
- :mod:`.sweep`: timing, the ``network``, ``graphs`` and ``compile`` stages;
- :mod:`.pipeline`: the ``tiler`` and ``pipeline`` stages;
- :mod:`.projection`: seconds for a 1M-cell slide from the best passing rates;
- :mod:`.report`, :mod:`.markdown`: the record of a run, its JSON and Markdown;
- :mod:`.context`: what the stages share; :mod:`.runner`: the run; :mod:`.cli`: ``main``.

Importing this package is cheap (no torch); its modules import torch where they use it.
"""

from wsi_tumor.errors import WsiTumorError


class ProbeError(WsiTumorError):
    """A slide or option the probe cannot use (turned into exit status 2 by ``main``)."""


__all__ = ["ProbeError"]
