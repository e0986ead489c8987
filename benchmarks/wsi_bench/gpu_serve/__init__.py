"""GPU serve check (issue 30): tritonserver on a GPU answering ``wsi-infer`` over gRPC, measured
end to end on a synthetic slide of 250,000 tissue cells, in one bounded command.

It runs from the repository root with no install (``src/`` and ``benchmarks/`` go on the
path); on the GPU machine it takes what the image lacks from the carried ``.gpu-bundle``
(``make gpu-bundle``)::

    python3 benchmarks/gpu_serve.py --bundle .gpu-bundle --device cuda   # the GPU machine
    python benchmarks/gpu_serve.py --device cpu --tiny                   # the suite's mode

Modules: :mod:`.environment` (set-up and prerequisites), :mod:`.slide` (the slides),
:mod:`.serve` (export, server, statistics, sampling), :mod:`.runs` (the client runs, the
breakdown, the CPU reference maps), :mod:`.stages`, :mod:`.report`, :mod:`.cli`.
docs/gpu.md says what it measures and how to read it.
"""
