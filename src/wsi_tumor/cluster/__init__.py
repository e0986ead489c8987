"""Cohorts on a cluster: one slide job per Ray task, on top of :mod:`wsi_tumor.client`.

Importing this package is cheap and does not need Ray; the modules import ``ray`` when they
run (install it with ``pip install 'wsi-tumor[ray]'``):

- :mod:`wsi_tumor.cluster.ray_cohort`: :func:`~wsi_tumor.cluster.ray_cohort.run_on_ray`,
  the ``wsi-infer --ray`` driver;
- :mod:`wsi_tumor.cluster.server_actor`: one Triton server per node, owned by a Ray actor;
- :mod:`wsi_tumor.cluster.progress`: the cohort's progress (slides, patches/s per node).
"""

from __future__ import annotations

from types import ModuleType

from wsi_tumor.errors import ConfigError

RAY_EXTRA = "pip install 'wsi-tumor[ray]'"
"""How to install the optional Ray dependency."""


def import_ray() -> ModuleType:
    """Import ``ray``.

    Raises:
        ConfigError: Ray is not installed (the message says how to install it).
    """
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            f"--ray needs the Ray package, which is not installed ({exc}): {RAY_EXTRA}"
        ) from None
    return ray


__all__ = ["RAY_EXTRA", "import_ray"]
