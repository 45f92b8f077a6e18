"""Which re-tuned thresholds to keep after a fine-tune: the keep rule, measured on held-out images.

After a fine-tune, the dock and ``train`` search the post-processing thresholds again on the
validation stripe (best AP@0.5, then among its equals the best SEG) and keep what the search found
only when its gain clears a bar (``core.retune.retune``). On a stripe of 1 to 100 objects a
search finds gains that do not carry over, so the bar decides whether a fine-tune helps or hurts
the user's next images. Each case is one fine-tune (a step budget: the same weights on a busy
machine or an idle one):

* ``loop:KIND:SEED``: bench_loop's turn: one validation-split DSB2018 image of KIND (fluorescence,
  he) segmented by the shipped model, its worst nuclei corrected by the simulated proofreader, the
  dock's fine-tune on it; held out: 5 other validation images of the kind, at their true size;
* ``cells:SET:K:SEED``: bench_cells' path on K images of SET; held out: 6 images of the set.

The default cases hold out no test-split image (validation-split DSB images, ISBI slices 20-29,
and renderings of those): the rule is chosen on them. ``dsb-colour``, ``dsb-x6``, ``phc-x6`` and
``phc-frames`` hold out test-split images: run them with ``--cases`` to report, not to choose.

For each case it prints the stripe's evidence (AP@0.5 and SEG before and after the search, its
objects, the starting model's stripe AP@0.5 or *trust*, the bars) and the held-out AP@0.5 / SEG of
the fine-tuned model with its starting thresholds, with what the search by AP@0.5 alone found, with
what the search found, and with the starting thresholds whose foreground threshold alone moved to
the best stripe SEG at the start's AP@0.5 (*reach*), with what a search that never lowers the minimum
size below the start's found (*floor*: judged by the same bars), and which thresholds each keep rule takes
(the shipped rule: the bars, then the start kept when the found thresholds score lower on both AP@0.5 and
SEG on the k training images, segmented whole, ``core.retune.veto``; where the search's clear neither bar,
the reach when its stripe SEG gain beats its paired noise alone, vetoed alike; where the start's
thresholds stay, the foreground threshold the training images ask for, ``core.retune.reach_on_training``). The
cases so far are written to ``--json`` after each one (a cut run keeps them); at the end, the mean
held-out AP@0.5 / SEG of each keep rule.

Run ``python benchmarks/bench_retune.py --help``; the default cases (38) took about 45 minutes on
one 2-core CPU and about 5 minutes each (over 3 hours) on another (2026-12-04).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

import bench_cells
import bench_loop
from _common import (
    DATA_CANDIDATES,
    add_layers_args,
    cpu_name,
    find_dsb2018,
    finetune,
    layers_from,
    score,
    write_json,
)
from napari_unet_loop.core.model_files import load
from napari_unet_loop.core.postprocess import MIN_SIZES, PostprocessConfig

CASES = [
    *(f"cells:dic-frames:{k}:{seed}" for k in (1, 2, 5) for seed in (0, 1)),
    *(f"cells:isbi:{k}:{seed}" for k in (1, 2) for seed in (0, 1, 2)),
    "cells:isbi:5:0",
    *(f"cells:isbi-x2:{k}:{seed}" for k in (1, 2) for seed in (0, 1)),
    *(f"cells:{s}:2:{seed}" for s in ("dic-isbi", "phc-isbi") for seed in (0, 1)),
    *(f"loop:fluorescence:{seed}" for seed in range(8)),
    *(f"loop:he:{seed}" for seed in range(9)),
]  # fmt: skip


def _ap_bar(r: dict) -> bool:
    return r["after"] - r["before"] > r["bar"]


def _reach(r: dict) -> str:
    if _ap_bar(r):
        return "found"
    noise = r["reach_seg_noise"]
    gain = r["reach_seg"] - r["seg_before"]
    return "reach" if noise is not None and gain > noise * (1 + r["trust"]) else "start"


def _floored(start: PostprocessConfig) -> dict[str, Any]:
    """The search with no minimum size below the start's (the stripe's cut fragments pull it down)."""
    return {"min_sizes": [m for m in MIN_SIZES if m >= start.min_size]}


def _with_veto(r: dict) -> str:
    """The search's thresholds past a bar, unless they score lower on both on the training images."""
    return "found" if _cleared(r) and not _vetoed(r) else "start"


def _reach_alone(r: dict) -> str:
    """The rule of 2026-12-06: :func:`_with_veto`; where the search cleared no bar, the reach past its noise alone."""
    if _cleared(r):
        return _with_veto(r)
    if "by_reach" in r:  # the product's own verdict, its veto included
        return "reach" if r["by_reach"] and r["kept"] and not r.get("by_training") else "start"
    noise = r["reach_seg_noise"]  # rows from before it shipped: the bar alone, unchecked on the training images
    return "reach" if noise is not None and r["reach_seg"] - r["seg_before"] > noise else "start"


def _on_training(r: dict) -> str:
    """The shipped rule: :func:`_reach_alone`; where it keeps the start's, the foreground threshold the training
    images ask for, past its paired noise there (rows from before 2026-12-07: as before)."""
    return "training" if r.get("by_training") else _reach_alone(r)


RULES = {
    # which thresholds each rule keeps
    "never re-tune": lambda r: "start",
    "AP@0.5 gain > noise x (1 + trust) (before 2026-12-03)": lambda r: "by_ap50" if _ap_bar(r) else "start",
    "... or, at no AP@0.5 loss, SEG gain > paired noise x (1 + trust) (before 2026-12-05)": (
        lambda r: "found" if _cleared(r) else "start"
    ),
    "AP@0.5 bar, or only the foreground threshold moved for SEG > its paired noise x (1 + trust)": _reach,
    "the rule before the veto, the search's minimum size not below the start's": (
        lambda r: "floor" if r.get("floor_kept") else "start"
    ),
    "... vetoed when the found thresholds score lower on both on the training images (before 2026-12-06)": _with_veto,
    "... else the reach for SEG > its paired noise alone, vetoed alike (before 2026-12-07)": _reach_alone,
    "... where the start's stay, the foreground threshold the training images ask for (shipped)": _on_training,
}


def _outcome(r: dict) -> str:
    """What the product's rule did with the case: the search's thresholds or the reach, kept or vetoed."""
    what = "  reach" if r.get("by_reach") else ""
    if r.get("by_training"):
        return f"{what}{'  vetoed' if r.get('vetoed') else ''}  training images' foreground threshold kept"
    if r["kept"]:
        return f"{what}  kept"
    return f"{what}  vetoed" if r.get("vetoed") else ""  # not kept: cleared only where vetoed


def _cleared(r: dict) -> bool:
    """Whether the found thresholds cleared the bars (an AP@0.5 gain, or a SEG gain at no AP@0.5 loss)."""
    if r.get("by_reach"):  # the search's cleared neither; the reach was kept (or vetoed)
        return False
    if r.get("by_training"):  # kept where the start's stayed: the search's cleared a bar only if it was vetoed
        return bool(r.get("vetoed"))
    return bool(r["kept"] or r.get("vetoed"))  # rows from before the veto shipped have no "vetoed": kept = cleared


def _vetoed(r: dict) -> bool:
    """Whether the found thresholds score lower on both AP@0.5 and SEG on the k training images (whole)."""
    if "vetoed" in r:  # the product's veto (core.retune.veto)
        return bool(r["vetoed"])
    trained = r.get("trained") or {}  # rows from before it shipped: the benchmark's own check, segment on each image
    if "found" not in trained:
        return False
    found, start = trained["found"], trained["start"]
    return found["ap50"] < start["ap50"] and found["seg"] < start["seg"]


def run_case(case: str, start, steps: int, device, layers: str = "auto") -> dict[str, Any]:
    """Fine-tune for one case (``layers`` as ``train --layers``); the stripe's evidence and the held-out scores with
    each set of thresholds."""
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
    child, run = finetune(
        start, train, 1.0, True, seed, device=device, steps=steps, retune_variants={"floor": _floored}, layers=layers
    )
    tuning, floor = run["tuning"], run["tuning_variants"]["floor"]
    chosen = {
        "start": run["start_postprocess"],
        "by_ap50": PostprocessConfig.from_dict(tuning["found_by_ap50"]),
        "found": PostprocessConfig.from_dict(tuning["found"]),
        "reach": PostprocessConfig.from_dict(tuning["found_for_reach"]),
        "floor": PostprocessConfig.from_dict(floor["found"]),
    }
    if tuning.get("found_on_training"):  # where the start's stayed: the training images' foreground threshold
        chosen["training"] = PostprocessConfig.from_dict(tuning["found_on_training"])
    held: dict[str, dict[str, float]] = {}
    scored: dict[PostprocessConfig, dict[str, float]] = {}
    for which, pp in chosen.items():
        if pp not in scored:
            model = copy.copy(child)
            model.card = copy.deepcopy(child.card)
            model.card.postprocess = pp
            scored[pp] = {k: v for k, v in score(model, heldout, device, **options).items() if k in ("ap50", "seg")}
        held[which] = scored[pp]
    return {
        "case": case,
        "steps": run["steps"],
        "layers": layers,
        "head_only": run["head_only"],
        **{k: tuning[k] for k in ("trust", "noise", "bar", "seg_noise", "seg_bar", "kept", "vetoed", "by_reach")},
        "by_training": tuning["by_training"],
        "before": tuning["ap50_before"],
        "after": tuning["ap50_after"],
        "seg_before": tuning["seg_before"],
        "seg_after": tuning["seg_after"],
        "reach_seg": tuning["reach_seg"],
        "reach_seg_noise": tuning["reach_seg_noise"],
        "objects": tuning["validation_objects"],
        "found": tuning["found"],
        "floor_found": floor["found"],
        "floor_kept": floor["kept"] and not floor.get("by_reach"),  # the floored search's own, not its reach
        "held": held,
        "trained": tuning["on_training_images"],  # the veto's evidence: the k training images, whole
    }


def _trained_line(r: dict, h: dict) -> str:
    """The training images' evidence of a case (the veto's check, the foreground threshold chosen there), if any."""
    trained = r.get("trained")
    if not trained:
        return ""
    start = trained["start"]
    line = f"on the training images start {start['ap50']:.3f} / {start['seg']:.3f}"
    if "found" in trained:  # thresholds kept on the stripe, checked there (the veto)
        line += f", checked {trained['found']['ap50']:.3f} / {trained['found']['seg']:.3f}"
    reach = trained.get("reach")
    if reach:  # where the start's stayed: the foreground threshold the training images ask for
        noise = "none" if reach["noise"] is None else f"{reach['noise']:.3f}"
        line += (
            f", foreground {reach['fg_threshold']:g} {reach['ap50']:.3f} / {reach['seg']:.3f} (gain "
            f"{reach['gain']:+.3f}, noise {noise}{', kept' if r.get('by_training') else ''})"
        )
        if "training" in h:
            line += f", held out {h['training']['ap50']:.3f} / {h['training']['seg']:.3f}"
    return line + "; "


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated loop:KIND:SEED or cells:SET:K:SEED")
    p.add_argument("--steps", type=int, default=400, help="fine-tuning steps per case")
    p.add_argument(
        "--json",
        type=Path,
        default=None,
        help="write the report here; cases it already holds (with the same --layers) are not run again",
    )
    add_layers_args(p)
    args = p.parse_args(argv)
    layers = layers_from(args, p)
    cases = [c for c in args.cases.split(",") if c]
    done, others = {}, []  # cases of an earlier run: asked for again, and not (kept in the file as other_cases)
    if args.json is not None and args.json.exists():  # a cut run goes on where it stopped
        earlier = json.loads(args.json.read_text())
        for r in [*earlier.get("cases", []), *earlier.get("other_cases", [])]:
            # rows from before --layers (2026-12-06) trained every layer on H&E: run again
            if r["case"] in cases and r.get("layers") == layers:
                done[r["case"]] = r
            else:
                others.append(r)
        print(f"{len(done)} of the {len(cases)} cases read from {args.json}")
    torch.set_num_threads(os.cpu_count() or 1)
    start = load("default")
    print(f"cpu      {cpu_name()}, {torch.get_num_threads()} torch threads; torch {torch.__version__}, "
          f"python {platform.python_version()}")  # fmt: skip
    print(f"model    {start.name}; {args.steps} steps per fine-tune, layers {layers}\n")
    rows = []
    for case in cases:
        r = done.get(case) or run_case(case, start, args.steps, "cpu", layers)
        rows.append(r)
        h = r["held"]
        seg_bar = "-" if r["seg_bar"] is None else f"{r['seg_bar']:.3f}"
        print(
            f"  {r['case']:<24} trust {r['trust']:.2f} {r['objects']:3d} objects  stripe AP@0.5 {r['before']:.3f} -> "
            f"{r['after']:.3f} (bar {r['bar']:.3f}), SEG {r['seg_before']:.3f} -> {r['seg_after']:.3f} (bar {seg_bar})"
            f"{_outcome(r)}  held out AP@0.5 / SEG: "
            f"start {h['start']['ap50']:.3f} / "
            f"{h['start']['seg']:.3f}, by AP@0.5 {h['by_ap50']['ap50']:.3f} / {h['by_ap50']['seg']:.3f}, "
            f"found {h['found']['ap50']:.3f} / {h['found']['seg']:.3f}, reach {h['reach']['ap50']:.3f} / "
            f"{h['reach']['seg']:.3f} (stripe SEG {r['reach_seg']:.3f}, noise {r['reach_seg_noise'] or math.inf:.3f}), "
            + (
                f"floored {h['floor']['ap50']:.3f} / {h['floor']['seg']:.3f}{' kept' if r['floor_kept'] else ''}; "
                if "floor" in h
                else "; "
            )
            + _trained_line(r, h)
            + f"the rules keep: {', '.join(rule(r) for rule in RULES.values())}",
            flush=True,
        )
        if case not in done:
            pending = [done[c] for c in cases[len(rows) :] if c in done]
            write_json(args.json, {"steps": args.steps, "cases": [*rows, *pending], "other_cases": others})
    print(f"\nmean held-out AP@0.5 / SEG over {len(rows)} fine-tunes, by keep rule (cases where it re-tunes):")
    report: dict[str, Any] = {"steps": args.steps, "cases": rows, "other_cases": others, "rules": {}}
    for name, rule in [*RULES.items(), ("oracle (best held-out SEG of those scored)", None)]:
        if rule is None:
            picked, kept = [max(r["held"].values(), key=lambda v: v["seg"]) for r in rows], None
        else:
            picked = [r["held"][rule(r)] for r in rows]
            kept = sum(rule(r) != "start" for r in rows)
        ap50, seg = (float(np.mean([p[k] for p in picked])) if picked else math.nan for k in ("ap50", "seg"))
        report["rules"][name] = {"mean_ap50": round(ap50, 4), "mean_seg": round(seg, 4), "kept": kept}
        print(f"  {name:<{max(map(len, RULES))}} {ap50:.4f} / {seg:.4f}" + ("" if kept is None else f"  ({kept})"))
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
