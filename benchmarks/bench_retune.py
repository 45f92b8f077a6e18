"""Which re-tuned thresholds to keep after a fine-tune: the keep rule, measured on held-out images.

After a fine-tune, the dock and ``train`` search the post-processing thresholds again on the
validation stripe and keep what the search found only when its gain clears a bar
(``core.finetune.retune``). On a stripe of 5 to 40 objects a search finds gains that do not carry
over, so the bar decides whether a fine-tune helps or hurts the user's next images. Each case is
one fine-tune (a step budget: the same weights on a busy machine or an idle one):

* ``loop:KIND:SEED``: bench_loop's turn: one validation-split DSB2018 image of KIND (fluorescence,
  he) segmented by the shipped model, its worst nuclei corrected by the simulated proofreader, the
  dock's fine-tune on it; held out: 5 other validation images of the kind, at their true size;
* ``cells:SET:K:SEED``: bench_cells' path on K images of SET (isbi, isbi-x2, dsb-colour, dsb-x6);
  held out: 6 images of the set.

For each case it prints the stripe's evidence (AP@0.5 before and after the search, its objects,
one standard error of AP@0.5 on them, the starting model's stripe AP@0.5 or *trust*) and the
held-out AP@0.5 of the fine-tuned model with its starting thresholds and with the found ones.
Then the mean held-out AP@0.5 of each keep rule: never, always, the gain beats the noise, the
shipped bar ``noise x (1 + trust)``, twice the noise, and an oracle that knows the held-out score.

Run ``python benchmarks/bench_retune.py --help``; the default cases (39) take about 40 minutes on
a 2-core CPU.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

import bench_cells
import bench_loop
from _common import DATA_CANDIDATES, cpu_name, find_dsb2018, finetune, score, write_json
from napari_unet_loop.core.model_files import load
from napari_unet_loop.core.postprocess import PostprocessConfig

CASES = [
    *(f"loop:{kind}:{seed}" for seed in range(9) for kind in ("fluorescence", "he") if seed < 8 or kind == "he"),
    *(f"cells:{s}:{k}:{seed}" for s in ("isbi", "dsb-colour", "isbi-x2", "dsb-x6") for k in (1, 2) for seed in (0, 1)),
    *(f"cells:{s}:{k}:2" for s in ("isbi", "dsb-colour") for k in (1, 2)),
    "cells:isbi:5:0",
    "cells:dsb-colour:5:0",
]  # fmt: skip

RULES = {
    "never re-tune": lambda r: False,
    "always": lambda r: r["after"] > r["before"],
    "gain > noise (before 2026-12-02)": lambda r: r["after"] - r["before"] > r["noise"],
    "gain > noise x (1 + trust) (shipped)": lambda r: r["after"] - r["before"] > r["bar"],
    "gain > 2 x noise": lambda r: r["after"] - r["before"] > 2 * r["noise"],
}


def run_case(case: str, start, steps: int, device) -> dict[str, Any]:
    """Fine-tune for one case; the stripe's evidence and the held-out AP@0.5 with either thresholds."""
    parts = case.split(":")
    if parts[0] == "loop":
        kind, seed = parts[1], int(parts[2])
        folder = find_dsb2018(None)
        items = bench_loop.turn_images(folder, bench_loop.images_of_kind(folder, "val", kind), seed, 5)
        train = [bench_loop.corrected_item(start, items[0], 6, device)[2]]
        heldout, options = items[1:], {"true_size": True}
    elif parts[0] == "cells":
        name, k, seed = parts[1], int(parts[2]), int(parts[3])
        root = next(d for d in DATA_CANDIDATES if d and d.is_dir())
        pool, heldout, _ = bench_cells.load_set(name, root, k, 6, seed)
        train, options = pool[:k], {}
    else:
        raise SystemExit(f"unknown case {case!r}: loop:KIND:SEED or cells:SET:K:SEED")
    child, run = finetune(start, train, 1.0, True, seed, device=device, steps=steps)
    tuning = run["tuning"]
    held = {}
    for which, pp in (("start", run["start_postprocess"]), ("found", PostprocessConfig.from_dict(tuning["found"]))):
        model = copy.copy(child)
        model.card = copy.deepcopy(child.card)
        model.card.postprocess = pp
        held[which] = score(model, heldout, device, **options)["ap50"]
    return {
        "case": case,
        "steps": run["steps"],
        "trust": tuning["trust"],
        "before": tuning["ap50_before"],
        "after": tuning["ap50_after"],
        "objects": tuning["validation_objects"],
        "noise": tuning["noise"],
        "bar": tuning["bar"],
        "held_start": held["start"],
        "held_found": held["found"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated loop:KIND:SEED or cells:SET:K:SEED")
    p.add_argument("--steps", type=int, default=400, help="fine-tuning steps per case")
    p.add_argument("--json", type=Path, default=None, help="write the report here")
    args = p.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    start = load("default")
    print(f"cpu      {cpu_name()}, {torch.get_num_threads()} torch threads; torch {torch.__version__}, "
          f"python {platform.python_version()}")  # fmt: skip
    print(f"model    {start.name}; {args.steps} steps per fine-tune\n")
    rows = []
    for case in [c for c in args.cases.split(",") if c]:
        r = run_case(case, start, args.steps, "cpu")
        rows.append(r)
        print(
            f"  {r['case']:<22} trust {r['trust']:.2f}  {r['objects']:3d} objects  stripe {r['before']:.3f} -> "
            f"{r['after']:.3f} (noise {r['noise']:.3f}, bar {r['bar']:.3f})  held out: start thresholds "
            f"{r['held_start']:.3f}, found {r['held_found']:.3f} ({r['held_found'] - r['held_start']:+.3f})",
            flush=True,
        )
    print(f"\nmean held-out AP@0.5 over {len(rows)} fine-tunes, by keep rule (cases where it re-tunes):")
    report: dict[str, Any] = {"steps": args.steps, "cases": rows, "rules": {}}
    for name, rule in [*RULES.items(), ("oracle", None)]:
        if rule is None:
            values, kept = [max(r["held_start"], r["held_found"]) for r in rows], None
        else:
            values = [r["held_found"] if rule(r) else r["held_start"] for r in rows]
            kept = sum(bool(rule(r)) for r in rows)
        report["rules"][name] = {"mean_ap50": round(float(np.mean(values)), 4), "kept": kept}
        print(f"  {name:<38} {np.mean(values):.4f}" + ("" if kept is None else f"  ({kept})"))
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
