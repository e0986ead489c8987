"""report.md of the accuracy benchmark: the claims over seeds first, then the evidence."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from wsi_bench.accuracy.collect import variant_key
from wsi_bench.accuracy.recipe import Levers


def _ci(block: dict[str, Any], digits: int = 3) -> str:
    mean = f"{block['mean']:.{digits}f}"
    if block.get("low") is None:
        return f"{mean} (one seed: no interval)"
    return f"{mean} [{block['low']:.{digits}f}, {block['high']:.{digits}f}]"


def _diff(block: dict[str, Any]) -> str:
    if block.get("low") is None:
        return f"{block['mean']:+.3f} (n = {block['n']})" if block["n"] else "-"
    return f"{block['mean']:+.3f} [{block['low']:+.3f}, {block['high']:+.3f}] (n = {block['n']})"


def _header(results: dict[str, Any]) -> list[str]:
    machine = results["machine"]
    return [
        "# wsi-tumor accuracy benchmark (hard synthetic set, over seeds)",
        "",
        f"Generated {results['date']} by `{results['command']}` in {results['duration_s']:.0f} s "
        f"({results['duration_s'] / 60:.1f} min) on {machine['cpu_model']} "
        f"({machine['logical_cores']} logical cores, {machine.get('cpu_flags', 'flags unknown')}); "
        f"the exported classifier runs at **{results['classifier_patches_per_s']:.0f} "
        "patches/s** here (ONNX Runtime, batch 32; runners of this kind range from about 45 to "
        "120).",
        "",
        f"Seeds {', '.join(map(str, results['seeds']))}: each its own hard dataset "
        f"({results['sizes']['train']} training, {results['sizes']['valid']} validation, "
        f"{results['sizes']['test']} test slides, half of the test slides normal), its own "
        "weights. Means over seeds with their 95 % t-intervals (n - 1 degrees of freedom).",
        "",
        f"Recipe: {results['recipe']}; first model {results['sizes']['epochs']} x "
        f"{results['sizes']['steps_per_epoch']} steps of {results['sizes']['batch_size']} "
        f"regions, fine-tuning {results['sizes']['finetune_steps']} steps on whole regions and "
        f"their patches (`--objective mixed --consistency {results['sizes']['consistency']}`), "
        "fp32 (`--no-amp`).",
    ]


def _recipe_table(results: dict[str, Any]) -> list[str]:
    summary, final = results["summary"], results["final_key"]
    recipe = summary["recipe"]
    lines = [
        "",
        "## The recipe over seeds (dense mode)",
        "",
        "| metric | mean [95 % interval] |",
        "|---|---|",
        f"| FROC | **{_ci(recipe['froc'])}** |",
        f"| slide-level AUC, the recipe's score | **{_ci(recipe['auc'])}** |",
        f"| slide-level AUC, map maximum | {_ci(recipe['auc_map_max'])} |",
        "",
        "| seed | lesions | FROC | sens @ 0.25 / 0.5 / 1 / 2 / 4 / 8 FP | AUC (score) | "
        "AUC (map max) | FP | cells/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for seed, data in results["per_seed"].items():
        for mode, s in data["variants"][final].items():
            sens = " / ".join(f"{v:.2f}" for v in s["sensitivity_at_fp"].values())
            lines.append(
                f"| {seed} ({mode}) | {s['lesions']} | {s['froc']:.3f} | {sens} | {s['auc']:.3f} "
                f"| {s['auc_map_max']:.3f} | {s['fp']} | {s['cells_per_s']:.0f} |"
            )
    lines += ["", "## Targets", ""]
    for name, ok in summary["targets"].items():
        lines.append(f"- {'n/a ' if ok is None else 'PASS' if ok else 'MISS'}: {name}")
    return lines


def _comparisons(results: dict[str, Any]) -> list[str]:
    summary, lines = results["summary"], []
    titles = {
        "dense_minus_exact": ("Dense vs exact mode (same weights)", "dense_vs_exact"),
        "int8_minus_fp32": ("INT8 vs FP32 (same checkpoint, dense mode)", "int8_vs_fp32"),
    }
    for name, (title, agreement) in titles.items():
        if name not in summary:
            continue
        block = summary[name]
        lines += [
            "",
            f"## {title}",
            "",
            f"Mean paired difference over seeds [95 % interval]: FROC {_diff(block['froc'])}; "
            f"AUC (recipe's score) {_diff(block['auc'])}; AUC (map max) "
            f"{_diff(block['auc_map_max'])}.",
            "",
            "| seed | tissue cells | Pearson | mean abs diff | max abs diff | cells on the other "
            "side of 0.5 |",
            "|---|---|---|---|---|---|",
        ]
        for seed, data in results["per_seed"].items():
            a = data.get(agreement)
            if a:
                lines.append(
                    f"| {seed} | {a['cells']} | {a['pearson']:.4f} | {a['mean_abs_diff']:.4f} | "
                    f"{a['max_abs_diff']:.3f} | {a['cells_other_side_of_05']} |"
                )
    return lines


def _ablation(results: dict[str, Any]) -> list[str]:
    summary = results["summary"]
    if "ablation" not in summary:
        return []
    lines = [
        "",
        "## Ablation: each lever alone on the baseline, paired over seeds",
        "",
        "| lever | FROC gain [95 % interval] | AUC gain [95 % interval] |",
        "|---|---|---|",
    ]
    for step in summary["ablation"]:
        lines.append(f"| {step['lever']} | {_diff(step['froc'])} | {_diff(step['auc'])} |")
    lines += ["", "| variant | FROC | AUC |", "|---|---|---|"]
    for level in summary["ablation_levels"]:
        lines.append(f"| {level['variant']} | {_ci(level['froc'])} | {_ci(level['auc'])} |")
    return lines


def _confounders(results: dict[str, Any], final: str) -> list[str]:
    totals: dict[str, int] = {}
    mined: dict[str, int] = {}
    for data in results["per_seed"].values():
        for kind, count in data["variants"][final]["dense"]["fp_on_confounders"].items():
            totals[kind] = totals.get(kind, 0) + count
        for kind, count in ((data.get("mining") or {}).get("by_confounder") or {}).items():
            mined[kind] = mined.get(kind, 0) + count
    lines = [
        "",
        "## False candidates per confounder (dense, summed over seeds)",
        "",
        "A false candidate lies on a confounder when it falls in that confounder's box on its "
        "slide (stain: any candidate on a test-centre slide); one may lie on several.",
        "",
        "| confounder | false candidates | hard negatives mined on it (training slides) |",
        "|---|---|---|",
    ]
    for kind, count in totals.items():
        lines.append(f"| {kind} | {count} | {mined.get(kind, '-')} |")
    if "none" in mined:
        lines.append(f"| (no confounder) | - | {mined['none']} |")
    return lines


def _timings(results: dict[str, Any]) -> list[str]:
    stages: dict[str, list[float]] = {}
    for record in results["stages"]:
        stages.setdefault(record["name"], []).append(record["seconds"])
    lines = ["", "## Timings", "", "| stage | runs | seconds (sum) |", "|---|---|---|"]
    for name, seconds in stages.items():
        lines.append(f"| {name} | {len(seconds)} | {sum(seconds):.0f} |")
    reused = sum(1 for r in results["stages"] if r["reused"])
    if reused:
        lines.append(f"\n{reused} stages were reused from an earlier run of the same work dir.")
    return lines


def render(results: dict[str, Any], variants: Sequence[Levers]) -> str:
    """report.md's text."""
    final = results["final_key"]
    lines = _header(results) + _recipe_table(results) + _comparisons(results)
    lines += _ablation(results) + _confounders(results, final) + _timings(results)
    if len(variants) > 1:
        lines += ["", "Variants: " + "; ".join(f"`{variant_key(v)}`" for v in variants) + "."]
    return "\n".join(lines) + "\n"
