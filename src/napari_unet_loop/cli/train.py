"""``napari-unet-loop train``: train from scratch or fine-tune, with checkpoints and ``--resume``."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import threading
import time
from pathlib import Path

from ..core import kind_weights, model_files
from ..core.checkpoint import run_settings, save_checkpoint, setting_differences
from ..core.device import resolve_device
from ..core.errors import TrainingError
from ..core.finetune import (
    Scaled,
    augmentation,
    check_samples,
    check_start,
    last_layer_only,
    layers_asked,
    one_kind_diameter,
    own_kind_weights,
    preset,
    record_sizes,
    start_kind,
    start_model,
    to_network_scale,
    training_record,
    weights_left_behind,
)
from ..core.image import InputError
from ..core.modality import LABELS as MODALITY_LABELS
from ..core.modality import MODALITIES, doubt_note, settle_doubt
from ..core.model_card import now_iso
from ..core.retune import retune, validation_objects
from ..core.sampling import balance_kinds, split_validation
from ..core.scale import scale_factor
from ..core.train import check_patch, iter_train, training_precision
from ..core.unet import UNet, UNetConfig
from ..io.conventions import check_writable
from ..io.training import training_reports
from ._common import CLIError, _fmt, _listed, _load_samples, _log, _marked, _pairs, _partial_labels, _read_list


def cmd_train(args: argparse.Namespace) -> int:
    """Train from scratch or fine-tune on a folder of images and label files."""
    device = resolve_device(args.device)
    given = out = Path(args.out)
    if out.suffix != model_files.SUFFIX:
        out = out.with_name(out.name + model_files.SUFFIX)
    folder = next((p for p in (given, out) if p.is_dir()), None)  # as given: not "<folder>.safetensors" beside it
    if folder is not None:
        raise CLIError(f"--out {folder} is a folder: give the model file to write, e.g. {folder / 'my_model'}")
    if out.stem.endswith(".partial"):
        raise CLIError(f"--out {out.name}: names ending in .partial are where runs keep their best weights so far")
    resume = getattr(args, "resume_state", None)
    only_kind = getattr(args, "only_kind", None)
    try:
        layers = layers_asked(getattr(args, "layers", None), args.head_only)
        check_start(
            args.start == "scratch",
            "start from a trained model (--from MODEL)",
            anchor="--anchor" if args.anchor else None,
            head_only=("--head-only" if args.head_only else "--layers last") if layers == "last" else None,
            only_kind="--only-kind" if only_kind else None,
        )
    except InputError as exc:
        raise CLIError(str(exc)) from None
    if layers == "last" and args.update_norm:
        raise CLIError(
            "--update-norm with --layers last: only the last layer trains and the normalisation statistics stay "
            "the starting model's; leave out one of them"
        )
    if only_kind and args.modality not in (None, "auto"):
        raise CLIError("--only-kind: the model goes on detecting each image's kind; leave out --modality")
    if out.exists() and not args.overwrite:
        if resume is not None:  # a run writes --out only when it ends: this file is not its own
            raise CLIError(
                f"{out} exists, and the run being resumed began without --overwrite: it is not this run's file "
                "(a run writes --out only when it ends); move it away, then resume"
            )
        raise CLIError(f"{out} exists; use --overwrite to replace it")
    for flag, value in (("--checkpoint-every", args.checkpoint_every), ("--val-every", args.val_every)):
        if value is not None and not value >= 0:  # NaN too
            raise CLIError(f"{flag} must be 0 or more, got {value}")
    ckpt_path, partial = out.with_suffix(".ckpt"), _partial_path(out)
    stale = _check_targets(out, ckpt_path, partial, args.overwrite, resume is None)
    if resume is not None:
        model = model_files.Model(UNet(args.resume_card.architecture), args.resume_card)
        parent = model.card.parent
    elif args.start == "scratch":
        cfg = UNetConfig(depth=args.depth, base_width=args.width, in_channels=args.in_channels)
        model = model_files.new_model(cfg, name=out.stem, seed=args.seed)
        model.card.modality = args.modality or ("auto" if args.in_channels == 1 else "none")
        parent = None
    else:
        model = model_files.load(args.start)
        parent = model.name
        model.card.parent = parent
        model.card.name = out.stem
        model.card.created = now_iso()  # the child's own date, not its parent's
        if args.modality:
            model.card.modality = args.modality
    if args.patch is not None:  # before reading any image
        try:
            check_patch(args.patch, model.card.architecture)
        except InputError as exc:
            raise CLIError(f"--patch {args.patch}: {exc}") from None
    include, exclude, val_names = (
        _read_list(args.include),
        _read_list(args.exclude),
        _read_list(args.val_list),
    )
    pairs = _pairs(args.images, args.labels)
    if include is not None:
        pairs = [p for p in pairs if _listed(p[0], include)]
    if exclude is not None:
        pairs = [p for p in pairs if not _listed(p[0], exclude)]
    if not pairs:
        raise CLIError("no image/label pairs left to train on after --include/--exclude")
    _partial_labels(args, pairs, "training")
    if not 0 <= args.val_fraction < 1:
        raise CLIError(f"--val-fraction must be at least 0 and below 1, got {args.val_fraction}")
    if val_names is not None and not any(_listed(p[0], val_names) for p in pairs):
        raise CLIError(f"no image matches the names in --val-list {args.val_list}: nothing to validate on")
    # grey images between fluorescence and brightfield (phase contrast, DIC) all reach the network alike,
    # and the new model reads such images as they were read here (a resumed run: as it began)
    reports = training_reports(pairs, model, getattr(args, "modality", None), args.channel, args.axes)
    model.card.kind_in_doubt = settle_doubt(reports, model.card.kind_in_doubt)
    note = doubt_note(reports, model.card.kind_in_doubt)
    if note:
        _log(note)

    def prepared(model: model_files.Model) -> tuple[list, list, Scaled]:
        """The training and validation samples as ``model`` reads them, at the network's scale."""
        if val_names is not None:
            train_pairs = [p for p in pairs if not _listed(p[0], val_names)]
            val_pairs = [p for p in pairs if _listed(p[0], val_names)]
            train = _marked(_load_samples(train_pairs, model, args), args)
            val = _marked(_load_samples(val_pairs, model, args), args)
            scaled = _network_scale([*train, *val], model, args, only_kind)
            return scaled.samples[: len(train)], scaled.samples[len(train) :], scaled
        scaled = _network_scale(_marked(_load_samples(pairs, model, args), args), model, args, only_kind)
        return *split_validation(scaled.samples, args.val_fraction, args.seed), scaled

    native = model.card.native_diameters  # the sizes the samples were scaled with
    train, val, scaled = prepared(model)
    start_weights = getattr(args, "resume_start_weights", None)  # a resumed run: what it began from
    own_weights, kind = False, None  # weights trained for the images' kind (a resumed run: as it began)
    if resume is None:
        # a child starts from the parent's weights and thresholds for the kind most of its images are,
        # and keeps none per kind (as the dock's Fine-tune)
        kind = start_kind([*train, *val])
        if kind in model.card.weights_by_kind:
            start_weights = kind
            _log(f"most of these images are {kind}: starting from {parent}'s own weights and thresholds for them")
        if not only_kind:  # a model of its own: one network
            note = weights_left_behind(model, kind, [*train, *val], parent)
            if note:
                _log(note[0].upper() + note[1:] + " (--only-kind KIND: new weights for one kind inside a copy instead)")
        try:
            parent_model, (model, ready) = model, start_model(model, kind, [*train, *val])
        except InputError as exc:
            raise CLIError(str(exc)) from None
        own_weights = own_kind_weights(parent_model, model, kind)
        if not ready or model.card.native_diameters != native:
            # H&E images prepared for the parent's colour network for them: as this one reads them, at the
            # sizes it takes (a kind's own weights may have learnt other sizes unscaled)
            train, val, scaled = prepared(model)
    _say_scale(scaled, model, args, only_kind)
    start_card = model.card.to_dict()  # what --resume starts from
    if not only_kind:  # weights for one kind join the --from model, at its object sizes
        record_sizes(model.card, scaled)
    if not train:
        raise CLIError("no training images left after taking out the validation images")
    if val_names is not None and not validation_objects(val):  # AP would be 0 or 1: a found speck or none
        raise CLIError(
            f"the images of --val-list {args.val_list} hold no objects: validation would score nothing; "
            "name annotated images there"
        )
    try:
        check_samples(train)  # the same checks as the dock's Fine-tune
    except InputError as exc:
        raise CLIError(f"the training images: {exc}") from None
    if not val:
        _log(
            "WARNING: no validation data (--val-fraction 0, or images too small to hold a stripe out): "
            "nothing will check that the model gets better; the weights at the end are kept as they are"
        )
    kinds = {k: sum(s.kind == k for s in train) for k in MODALITIES}
    shares = None
    if args.balance_kinds:
        shares = balance_kinds(train, _parse_shares(args.balance_kinds))
        _log("patches per kind of image: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in shares.items()))
    fine_tune = args.start != "scratch"
    # --freeze-encoder and --update-norm ask for other layers: automatic layers then train them
    head_only = last_layer_only(layers, own_weights, fine_tune, args.freeze_encoder or args.update_norm)
    augment = augmentation(fine_tune, intensity=args.intensity, blur=args.blur, stain=args.stain)
    config = preset(
        fine_tune,
        minutes=args.minutes,
        patch_size=args.patch,
        batch_size=args.batch,
        learning_rate=args.lr,
        steps=args.steps,
        val_every_s=args.val_every,
        freeze_encoder=args.freeze_encoder,
        head_only=head_only,
        freeze_norm=False if args.update_norm else None,
        anchor=args.anchor,
        precision=args.precision,
        seed=args.seed,
        select_by=args.select_by,
        augment=augment,
    )
    if resume is not None:
        # the run goes on with the settings it began with, even if this release's presets changed since
        own = run_settings(resume, type(config))
        changed = setting_differences(own, config)
        if changed:
            _log(f"the run goes on with the settings it began with ({', '.join(changed)} differ from today's)")
        config = own
    if config.augment.stain and model.card.architecture.in_channels != 3:
        _log("--stain: this network reads grey images, so there is no stain to mix (it mixes colour patches only)")
    _log(
        f"{'fine-tuning ' + parent if parent else 'training from scratch'} on {device} "
        f"({training_precision(device, config.precision)}): "
        f"{len(train)} training and {len(val)} validation sample(s), budget "
        f"{str(args.minutes) + ' min' if args.minutes else ''}{' ' if args.minutes and args.steps else ''}"
        f"{str(args.steps) + ' steps' if args.steps else ''}"
    )
    if config.head_only:
        if resume is not None:
            why = "as the run began"
        elif layers == "auto":
            why = (
                f"chosen automatically for weights trained on {MODALITY_LABELS.get(kind, kind)} images; "
                "--layers all trains the whole network"
            )
        else:
            why = "--layers last"
        _log(f"only the network's last layer trains ({why}): the rest reads the images as the start did")
    started = getattr(args, "resume_started", None) or _dt.datetime.now().astimezone().isoformat(timespec="seconds")

    if args.description:
        model.card.description = args.description

    tuning: dict = {}

    def write(result_val: dict | None, final: bool, extra: dict) -> None:
        model.card.metrics = {"validation": result_val} if result_val else {}
        if final and tuning:
            model.card.metrics["threshold_tuning"] = tuning
        model.card.training = training_record(
            config,
            device,
            train,
            val,
            steps=extra.pop("steps", 0),
            seconds=extra.pop("seconds", 0.0),
            patches=extra.pop("patches", None),
            modality=model.card.modality,
            started=started,
            data={
                "images": str(Path(args.images).resolve()),
                "labels": str(Path(args.labels).resolve()),
                **({"partial_labels": True} if getattr(args, "partial_labels", False) else {}),
            },
            include=args.include,
            exclude=args.exclude,
            val_list=args.val_list,
            kinds=kinds,
            kind_shares=shares,
            object_diameter=scaled.diameter,
            rescaled_by=scaled.factor,
            final=final,
            # the command as given (a resumed run's: the one it began with, not --resume CHECKPOINT)
            command=" ".join(["napari-unet-loop", *getattr(args, "argv", sys.argv[1:])]),
            start_weights=start_weights,
            **extra,
        )
        # the best weights so far go beside --out, which only a finished run replaces
        target = out if final else partial
        model_files.save(_joined(model, args.start, only_kind, out) if only_kind else model, target, overwrite=True)

    for p in stale:
        _remove(p)
        _log(f"removed {p}, left by an earlier cut run (--overwrite)")
    gen = iter_train(
        model.net,
        train,
        val,
        config,
        device,
        model.card.postprocess,
        stop=threading.Event(),
        checkpoint_every_s=args.checkpoint_every * 60 if args.checkpoint else None,
        resume=resume,
    )
    last = 0.0
    ckpt_extra = {
        "argv": args.argv,
        "cwd": args.run_cwd,  # the folder its relative paths are read from
        "card": json.dumps(start_card),
        "started": started,
        "start_weights": start_weights,
    }
    try:
        while True:
            ev = next(gen)
            now = time.perf_counter()
            if ev.kind == "start":
                _log(ev.message + (f"; starting scores {_fmt(ev.val)}" if ev.val else ""))
            elif ev.kind == "step" and now - last > args.log_every:
                last = now
                _log(f"step {ev.step}  loss {ev.loss:.4f}  {100 * ev.fraction:.0f}%  eta {ev.eta / 60:.1f} min")
            elif ev.kind == "val":
                saved = False
                if ev.is_best and args.checkpoint and ev.best_state is not None:
                    # save the best weights as they are found, so an interrupted run keeps them
                    model.net.load_state_dict(ev.best_state)
                    write(ev.val, False, {"steps": ev.step, "seconds": round(ev.elapsed, 1)})
                    saved = True
                note = ("  (best so far, saved)" if saved else "  (best so far)") if ev.is_best else ""
                _log(f"validation at step {ev.step}: {_fmt(ev.val)}{note}")
            elif ev.kind == "checkpoint" and ev.checkpoint is not None:
                save_checkpoint(ev.checkpoint, ckpt_path, ckpt_extra)
                _log(f"checkpoint at step {ev.step} in {ckpt_path} (continue a cut run with --resume {ckpt_path})")
    except StopIteration as stop:
        result = stop.value
    except KeyboardInterrupt:
        _log(
            "interrupted; "
            + _left_behind(out, partial)
            + (f"; continue with: napari-unet-loop train --resume {ckpt_path}" if ckpt_path.exists() else "")
        )
        return 130
    except TrainingError as exc:  # e.g. the loss went NaN: --out is as it was
        if partial.exists():  # this run's (an earlier run's were removed when it began), resumed ones' too
            raise TrainingError(f"{exc} The best weights before it are in {partial}.") from exc
        raise
    if val and args.tune:
        try:
            # checked on the training images whole: with --val-list those of train, else the stripes' images too
            whole = train if val_names is not None else scaled.samples
            retuned = retune(model.net, val, device, model.card.postprocess, args.precision, result.trust, whole)
        except KeyboardInterrupt:
            _log("interrupted while tuning the thresholds; " + _left_behind(out, partial))
            return 130
        verdict = retuned.verdict() + (f": {retuned.postprocess.to_dict()}" if retuned.kept else "")
        _log(f"thresholds tuned on the validation data: AP50 {retuned.before:.4f} -> {retuned.after:.4f}; {verdict}")
        model.card.postprocess = retuned.postprocess
        tuning.update(retuned.to_dict())
    write(
        result.best,
        True,
        {
            "steps": result.steps,
            "patches": result.patches,
            "seconds": round(result.seconds, 1),
            "anchor_applied": round(result.anchor, 3),
            # out of memory halved the batch: the patches per step the run ended with
            **({"batch_size_cut_to": result.batch_size} if result.batch_size < config.batch_size else {}),
            "baseline": result.baseline,
            "history": _thin(result.history),
        },
    )
    for p in (ckpt_path, partial):  # the run is complete: its model file holds everything
        _remove(p)
    if result.batch_size < config.batch_size:
        _log(
            f"note: out of memory, the run went on with {result.batch_size} patches per step instead of "
            f"{config.batch_size} (recorded in the card)"
        )
    if result.baseline is not None and parent is not None and not result.improved:
        _log(f"warning: fine-tuning did not beat {parent} on the validation data; {out} holds the starting weights")
    _log(
        f"wrote {out} ({result.steps} steps, {result.patches} patches, {result.seconds / 60:.1f} min)"
        + (f"; validation {_fmt(result.best)}" if result.best else "")
        + (f"; the new weights answer for {only_kind} images only, other images keep {parent}'s" if only_kind else "")
    )
    return 0


def _partial_path(out: Path) -> Path:
    """Where a run keeps its best weights so far: beside ``out``, which only a finished run replaces."""
    return out.with_name(out.stem + ".partial" + model_files.SUFFIX)


def _left_behind(out: Path, partial: Path) -> str:
    """What an interrupted run leaves: its best weights so far (also from before a resume), ``out`` as it was."""
    kept = f"{out} is as it was" if out.exists() else f"{out} not written"
    return (f"the best model so far is in {partial}; " if partial.exists() else "") + kept


def _check_targets(out: Path, ckpt: Path, partial: Path, overwrite: bool, fresh: bool) -> list[Path]:
    """Before any training: ``out`` can be written, replaces nothing of the user's, and no cut run is dropped.

    A fresh run finding an earlier run's checkpoint or best-so-far weights at ``out`` refuses without
    ``overwrite`` (that run can go on with ``--resume``).

    Returns
    -------
    list of pathlib.Path
        With ``overwrite``: those files, to remove when training starts, so a run cut before its first
        checkpoint never points to another run's.
    """
    check_writable(out.parent)
    try:
        model_files.check_card_place(out)
    except model_files.ModelError as exc:
        raise CLIError(f"{exc}: choose another --out") from None
    if not fresh:
        return []
    left = [p for p in (ckpt, partial) if p.exists()]
    if left and not overwrite:
        how = f"continue it with --resume {ckpt}, or" if ckpt.exists() else "keep them elsewhere, or"
        raise CLIError(
            f"{' and '.join(map(str, left))} {'hold' if len(left) > 1 else 'holds'} an earlier cut run of this "
            f"model: {how} "
            "use --overwrite to start afresh (they are then removed)"
        )
    return left


def _remove(path: Path) -> None:
    """Remove a checkpoint, or a model file with its ``.json`` card."""
    path.unlink(missing_ok=True)
    if path.suffix == model_files.SUFFIX:
        path.with_suffix(".json").unlink(missing_ok=True)


def _joined(model: model_files.Model, start: str, kind: str, out: Path) -> model_files.Model:
    """``--only-kind``: the ``--from`` model (as its file holds it) with ``model``'s weights for ``kind`` images."""
    try:
        return kind_weights.with_kind_weights(model_files.load(start), kind, model, out.stem)
    except model_files.ModelError as exc:
        raise CLIError(f"--only-kind: {exc}") from None


def _network_scale(samples, model: model_files.Model, args: argparse.Namespace, only_kind: str | None = None) -> Scaled:
    """The samples at the network's scale (``--diameter`` or measured on the labels), said in the log.

    With ``only_kind`` the weights join the model, which has one object size: the samples train
    at its size unless ``--diameter`` says otherwise (:func:`~napari_unet_loop.core.finetune.one_kind_diameter`).
    """
    diameter = getattr(args, "diameter", None)
    if only_kind:
        try:
            # judged on the --from model's card as its file holds it (the weights join it), not on the network for
            # the kind that the run starts from, nor on a resumed run's card: a colour network reads no kinds
            source = model_files.Model(model.net, model_files.read_card(args.start))  # its header only
            diameter = one_kind_diameter(source, samples, only_kind, diameter)
        except (InputError, model_files.ModelError) as exc:
            raise CLIError(f"--only-kind: {exc}") from None
    try:
        scaled = to_network_scale(samples, model.card, diameter)
    except InputError as exc:
        raise CLIError(f"--diameter: {exc}") from None
    return scaled


def _say_scale(scaled: Scaled, model: model_files.Model, args: argparse.Namespace, only_kind: str | None) -> None:
    """Log the object size the samples train at, and how they were rescaled for ``model``'s network."""
    if scaled.diameter is None:
        return
    how = "given" if getattr(args, "diameter", None) else ("the model's" if only_kind else "measured on the labels")
    if scaled.factor != 1.0:
        _log(
            f"objects {scaled.diameter:.1f} px across ({how}); images rescaled by {scaled.factor:.3g} "
            f"to the model's {model.card.diameter:.1f} px"
        )
    else:
        native = model.card.native_diameters
        within = (
            f" (within the {native[0]:g}-{native[1]:g} px its network learnt as they are)"
            if native and scale_factor(model.card.diameter, scaled.diameter) != 1.0  # rescaled without the range
            else ""
        )
        _log(f"objects {scaled.diameter:.1f} px across ({how}): images used at their own scale{within}")


def _parse_shares(text: str) -> dict[str, float]:
    """``he=0.2,brightfield=0.15`` -> ``{"he": 0.2, "brightfield": 0.15}``."""
    shares = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        try:
            share = float(value)
        except ValueError:
            share = -1.0
        if not sep or key not in MODALITIES or not 0 <= share < 1:
            raise CLIError(
                f"--balance-kinds {text!r}: give KIND=SHARE pairs, e.g. he=0.2,brightfield=0.15 "
                f"(kinds: {', '.join(MODALITIES)}; shares from 0 to below 1)"
            )
        shares[key] = share
    return shares


def _thin(history: list[dict], n: int = 400) -> list[dict]:
    """Keep every validation entry and about ``n`` loss entries of a training history."""
    losses = [h for h in history if "loss" in h]
    step = max(1, len(losses) // n)
    keep = {id(h) for h in losses[::step]}
    return [h for h in history if "val" in h or id(h) in keep]
