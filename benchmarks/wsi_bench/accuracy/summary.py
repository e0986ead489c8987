"""Statistics over seeds: means with 95 % t-intervals, paired differences and the targets.

A seed is one draw of the whole benchmark (its own training and test slides, its own
weights); one run's figure moves in steps of a lesion or a slide pair, so the claims are
made on the mean over seeds, with Student's t interval (n - 1 degrees of freedom) of the
per-seed values or of their paired differences.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from wsi_bench.accuracy.collect import variant_key
from wsi_bench.accuracy.recipe import BASELINE, LEVERS, Levers

TARGET_AUC: Final = 0.85
TARGET_FROC: Final = 0.80
NON_INFERIORITY: Final = -0.02
"""A mode or precision is non-inferior when the lower end of the 95 % interval of the mean
paired difference is at least this, for FROC and for slide-level AUC."""


def mean_interval(values: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """Mean, standard deviation and the t-interval of the mean (None with one value)."""
    from scipy import stats

    x = np.asarray(values, np.float64)
    mean = float(x.mean()) if x.size else float("nan")
    if x.size < 2:
        return {"n": int(x.size), "mean": mean, "sd": None, "low": None, "high": None}
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * sd / np.sqrt(x.size))
    return {"n": int(x.size), "mean": mean, "sd": sd, "low": mean - half, "high": mean + half}


def _values(seeds: dict[int, Any], key: str, mode: str, metric: str) -> list[float]:
    return [float(s["variants"][key][mode][metric]) for s in seeds.values()]


def differences(
    seeds: dict[int, Any], a: tuple[str, str], b: tuple[str, str], metric: str
) -> dict[str, Any]:
    """``b - a`` per seed (each a (variant key, mode)) and its mean interval, where both ran."""
    per_seed = {
        seed: float(s["variants"][b[0]][b[1]][metric]) - float(s["variants"][a[0]][a[1]][metric])
        for seed, s in seeds.items()
        if b[1] in s["variants"].get(b[0], {}) and a[1] in s["variants"].get(a[0], {})
    }
    return {"per_seed": per_seed, **mean_interval(list(per_seed.values()))}


def summarize(seeds: dict[int, Any], final: Levers, ablation: bool) -> dict[str, Any]:
    """The benchmark's claims: the recipe's scores over seeds, modes, precisions, levers."""
    key = variant_key(final)
    summary: dict[str, Any] = {
        "recipe": {
            metric: mean_interval(_values(seeds, key, "dense", metric))
            for metric in ("froc", "auc", "auc_map_max")
        }
    }
    comparisons = {
        "dense_minus_exact": ("exact", "dense"),
        "int8_minus_fp32": ("dense", "dense-int8"),
    }
    for name, (a, b) in comparisons.items():
        if any(b in s["variants"][key] and a in s["variants"][key] for s in seeds.values()):
            summary[name] = {
                metric: differences(seeds, (key, a), (key, b), metric)
                for metric in ("froc", "auc", "auc_map_max")
            }
    if ablation:
        base = variant_key(BASELINE)
        summary["ablation"] = [
            {
                "lever": name,
                **{
                    metric: differences(seeds, (base, "dense"), (variant_key(v), "dense"), metric)
                    for metric in ("froc", "auc")
                },
            }
            for name, v in LEVERS
        ]
        summary["ablation_levels"] = [
            {
                "variant": name,
                **{
                    m: mean_interval(_values(seeds, variant_key(v), "dense", m))
                    for m in ("froc", "auc")
                },
            }
            for name, v in (("baseline", BASELINE), *LEVERS, ("recipe", final))
        ]
    summary["targets"] = targets(summary)
    return summary


def targets(summary: dict[str, Any]) -> dict[str, bool | None]:
    """PASS/MISS of each target (None: not measured in this run)."""
    recipe = summary["recipe"]
    out: dict[str, bool | None] = {
        f"mean slide-level AUC (dense, the recipe's score) >= {TARGET_AUC}": recipe["auc"]["mean"]
        >= TARGET_AUC,
        f"mean FROC (dense) >= {TARGET_FROC}": recipe["froc"]["mean"] >= TARGET_FROC,
    }
    for name, label in (("dense_minus_exact", "dense - exact"), ("int8_minus_fp32", "INT8 - FP32")):
        block = summary.get(name)
        for metric in ("froc", "auc"):
            low = block[metric]["low"] if block else None
            out[f"{label} {metric.upper()}: 95 % interval's lower end >= {NON_INFERIORITY}"] = (
                None if low is None else low >= NON_INFERIORITY
            )
    for step in summary.get("ablation", []):
        for metric in ("froc", "auc"):
            out[f"ablation {step['lever']}: mean paired gain in {metric.upper()} >= 0"] = (
                step[metric]["mean"] >= 0 if step[metric]["n"] else None
            )
    return out
