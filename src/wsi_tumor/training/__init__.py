"""Training of the tumour classifier: label CSVs, the nine-patch dataset, the training loop.

Submodules import torch; importing this package alone does not.
"""
