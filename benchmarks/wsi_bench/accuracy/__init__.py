"""The accuracy benchmark (``make accuracy``, ``make accuracy-ablation``).

Modules: :mod:`recipe` (levers, sizes, paths), :mod:`pipeline` (the product's commands per
seed, reusable stages), :mod:`collect` (scores read back from the files), :mod:`summary`
(means and intervals over seeds, targets), :mod:`report` (report.md) and :mod:`cli`.
"""
