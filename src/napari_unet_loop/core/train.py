"""Training and fine-tuning: a generator that yields progress and returns the best model.

:func:`iter_train` trains a :class:`~napari_unet_loop.core.unet.UNet` on annotated
samples with the U-Net paper's weighted cross-entropy (border weight map) on the
background / interior / boundary classes plus a distance-map loss, on augmented
patches (flips, rotations, zoom, elastic deformation, intensity jitter) drawn on
the training device. It validates on held-out samples every ``val_every_s``
seconds, keeps the best weights (keep-best), and stops at the time or step
budget, when asked to stop, or with a :class:`TrainingError` if the loss turns
non-finite. Training works on a copy of the network; the network handed in is
only changed at the very end, to the best weights found, so a failed, closed or
crashed run never leaves a half-trained model behind.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from .augment import AugmentConfig
from .config import Settings
from .device import autocast_dtype, cpu_bf16_native
from .errors import InputError, TrainingError  # noqa: F401 - TrainingError raised here, imported from here elsewhere
from .metrics import MatchCounts, SegCounts, matching, pool
from .postprocess import PostprocessConfig, instances
from .predict import predict
from .sampling import PatchSampler, Sample
from .targets import make_targets
from .unet import UNet, UNetConfig

MIN_VAL_SIDE = 32
MAX_CENTRES = 1_000_000


class StopFlag(Protocol):
    """Anything with ``is_set()``, e.g. :class:`threading.Event`."""

    def is_set(self) -> bool:  # pragma: no cover - protocol
        """Whether the run should stop."""
        ...


@dataclass(frozen=True)
class TrainConfig(Settings):
    """Settings of a training run.

    Parameters
    ----------
    patch_size : int
        Side of the training patches (a multiple of ``2**depth``).
    batch_size : int
        Patches per step.
    learning_rate, weight_decay : float
        AdamW settings; the rate warms up, then follows a cosine to 5 %.
    minutes : float or None
        Time budget; the run ends when it is spent (or at ``steps``).
    steps : int or None
        Step budget.
    val_every_s : float
        Seconds of training between validations.
    val_every_steps : int or None
        Steps between validations instead (``None``: by time). Validating at fixed steps makes a
        run with a step budget independent of the machine's load: the same seed keeps the same
        weights, on a busy machine or an idle one.
    freeze_encoder : bool
        Train only the expanding path (fast CPU fine-tunes of a good model).
    head_only : bool
        Train only the final 1 x 1 convolution, which turns the features into class scores
        and the distance map: the network reads the images as before and the fine-tune
        recalibrates what it makes of them. For images the starting weights already read
        well: fitting the whole network to the left parts of H&E images raised the weighted
        loss on their right parts at every learning rate tried; the final layer alone lowered
        it or raised it by 1.5 % (docs/model.md). The normalisation statistics stay the
        start's whatever ``freeze_norm`` says.
    freeze_norm : bool
        Keep the batch-norm statistics of the starting model (its scale and shift
        parameters still train). For fine-tuning on a few images: statistics re-estimated
        from a handful of patches first wreck the model, then over-fit those images
        (held-out AP@0.5 after a 2-minute, 2-image CPU fine-tune, ISBI EM: 0.38 updating,
        0.45-0.56 kept; DSB colour: 0.44 updating, 0.47-0.48 kept). Leave off when training from
        scratch or on much data.
    precision : str
        ``"auto"`` (bf16 on CUDA and on CPUs with bf16 support), ``"fp32"``,
        ``"bf16"`` or ``"fp16"``.
    w0, sigma : float
        Border weight map parameters (paper: 10 and 5 px).
    dist_weight : float
        Weight of the distance-map loss.
    fg_fraction : float
        Share of patches centred on a random object pixel (the rest anywhere).
    select_by : str
        Validation score that picks the best weights: ``"ap50"`` or ``"loss"``.
    anchor : float
        Pull toward the starting weights (L2-SP, decoupled as AdamW decouples weight decay),
        in proportion to how well the starting model already does on the validation data:
        after each step every trained weight moves ``learning rate x anchor x AP@0.5`` of its
        distance back to where the run started (AP@0.5 of the starting weights on the
        validation samples), so a weight strays about ``1 / (anchor x AP@0.5)`` at most where the
        data keep pushing it. A model that already segments the user's images well keeps what
        it knows while it learns the corrections; one that does not (a new kind of image, AP@0.5
        near 0) is left free to learn it. Without validation data there is no pull. 0: off.
    augment : AugmentConfig
        Augmentation.
    seed : int
        Random seed.
    """

    _what = "training"
    _nested = {"augment": AugmentConfig}

    patch_size: int = 128
    batch_size: int = 16
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    minutes: float | None = 5.0
    steps: int | None = None
    val_every_s: float = 30.0
    val_every_steps: int | None = None
    freeze_encoder: bool = False
    head_only: bool = False
    freeze_norm: bool = False
    precision: str = "auto"
    w0: float = 10.0
    sigma: float = 5.0
    dist_weight: float = 1.0
    fg_fraction: float = 0.3
    select_by: str = "ap50"
    anchor: float = 0.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.minutes is None and self.steps is None:
            raise ValueError("give a time budget (minutes) or a number of steps")
        if self.minutes is not None and not (math.isfinite(self.minutes) and self.minutes > 0):
            raise ValueError(f"the time budget must be a positive number of minutes, got {self.minutes}")
        if self.steps is not None and self.steps <= 0:
            raise ValueError("steps must be positive")
        if self.val_every_steps is not None and self.val_every_steps <= 0:
            raise ValueError(f"val_every_steps must be positive, got {self.val_every_steps}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"the learning rate must be a positive number, got {self.learning_rate}")
        if self.patch_size < 16 or self.batch_size < 1:
            raise ValueError("patch_size must be >= 16 and batch_size >= 1")
        if self.select_by not in ("ap50", "loss"):
            raise ValueError("select_by must be 'ap50' or 'loss'")
        if not (math.isfinite(self.anchor) and 0 <= self.anchor * self.learning_rate <= 1):
            raise ValueError(
                f"anchor must be 0 or positive, at most 1 / learning rate ({1 / self.learning_rate:g}), "
                f"got {self.anchor}"
            )


@dataclass
class TrainEvent:
    """Progress of a training run, yielded by :func:`iter_train`.

    Attributes
    ----------
    kind : str
        ``"start"``, ``"step"``, ``"val"`` or ``"checkpoint"`` (and ``"check"``: thresholds being
        chosen after the training, from the dock's worker).
    step : int
        Optimiser steps done.
    fraction : float
        Share of the budget used, 0 to 1.
    elapsed, eta : float
        Seconds since the start, and estimated seconds left.
    loss : float or None
        Training loss of the last step (``"step"``).
    val : dict or None
        Validation scores (``"val"``).
    is_best : bool
        Whether these validation scores are the best so far.
    message : str
        Human-readable note.
    best_state : dict or None
        On ``"val"`` events that set a new best: a copy of those weights (for checkpoints).
    checkpoint : dict or None
        On ``"checkpoint"`` events: the whole training state (see :func:`iter_train`'s
        ``resume``), to write with :func:`save_checkpoint`.
    """

    kind: str
    step: int
    fraction: float
    elapsed: float
    eta: float
    loss: float | None = None
    val: dict[str, float] | None = None
    is_best: bool = False
    message: str = ""
    best_state: dict[str, Any] | None = None
    checkpoint: dict[str, Any] | None = None


@dataclass
class TrainResult:
    """Outcome of :func:`iter_train`.

    Attributes
    ----------
    baseline : dict or None
        Validation scores of the starting weights.
    best : dict or None
        Validation scores of the best weights (loaded into the network).
    improved : bool
        Whether the best weights beat the starting weights on validation.
    stopped : bool
        Whether the run was stopped by the user before its budget.
    steps, patches : int
        Optimiser steps and training patches seen.
    seconds : float
        Wall time.
    history : list of dict
        Losses and validation scores over time.
    batch_size : int
        The batch size used at the end (smaller if memory ran short).
    anchor : float
        The pull toward the starting weights that was applied (``config.anchor`` x ``trust``;
        0 when off or without validation data).
    trust : float
        The starting weights' validation AP@0.5 (0 without validation data): how well the model
        the run started from already did on the user's data. The anchor's pull and the bar that
        re-tuned thresholds must clear (``core.retune.retune``) both grow with it.
    trained : dict or None
        Validation scores of the best weights the run trained itself (after the start): ``best``
        when it improved; ``None`` without validation data or without a step.
    trained_state : dict or None
        Only when the run did not improve on the starting weights (the network then holds those):
        the weights that scored ``trained``, for a user who wants the fine-tuned model anyway.
    """

    baseline: dict[str, float] | None
    best: dict[str, float] | None
    improved: bool
    stopped: bool
    steps: int
    patches: int
    seconds: float
    history: list[dict[str, Any]]
    batch_size: int
    anchor: float = 0.0
    trust: float = 0.0
    trained: dict[str, float] | None = None
    trained_state: dict[str, Any] | None = None


def training_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """Autocast dtype for training: like prediction, plus bf16 on CPUs that compute it in hardware.

    Where bf16 is only emulated (AVX-512 without BF16) ``"auto"`` trains in fp32, 2.5x faster
    there (:func:`.device.cpu_bf16_native`).
    """
    if precision == "auto" and device.type == "cpu":
        return torch.bfloat16 if cpu_bf16_native() else None
    return autocast_dtype(device, precision)


def training_precision(device: torch.device | str, precision: str = "auto") -> str:
    """What a training run computes in, as a word for messages and model cards.

    Examples
    --------
    >>> training_precision("cpu", "fp32")
    'fp32'
    """
    dtype = training_dtype(torch.device(device), precision)
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")


def loss_terms(
    logits: torch.Tensor,
    classes: torch.Tensor,
    weight: torch.Tensor,
    distance: torch.Tensor,
    n_classes: int = 3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted cross-entropy and distance-map loss, averaged over counted pixels.

    Parameters
    ----------
    logits : torch.Tensor
        ``(N, n_classes + 1, H, W)`` network outputs.
    classes : torch.Tensor
        ``(N, H, W)`` class targets.
    weight : torch.Tensor
        ``(N, H, W)`` border weight map (0 = ignored).
    distance : torch.Tensor
        ``(N, H, W)`` normalised distance targets.
    n_classes : int
        Number of class logits.

    Returns
    -------
    tuple of torch.Tensor
        ``(class_loss, distance_loss)``; the distance loss is the binary
        cross-entropy minus its minimum (the target's entropy), so both are 0 at best.
    """
    logits = logits.float()
    valid = (weight > 0).float()
    n = valid.sum().clamp(min=1.0)
    ce = F.cross_entropy(logits[:, :n_classes], classes, reduction="none")
    cls_loss = (ce * weight).sum() / n
    d = distance.clamp(1e-6, 1 - 1e-6)
    entropy = -(d * d.log() + (1 - d) * (1 - d).log())
    bce = F.binary_cross_entropy_with_logits(logits[:, n_classes], distance, reduction="none")
    dist_loss = ((bce - entropy) * valid).sum() / n
    return cls_loss, dist_loss


def validate(
    net: UNet,
    samples: Sequence[Sample],
    device: torch.device,
    postprocess: PostprocessConfig,
    precision: str = "auto",
    targets: list | None = None,
    w0: float = 10.0,
    sigma: float = 5.0,
) -> dict[str, float]:
    """Score the network on validation samples: loss, AP@0.5/0.75, F1, PQ, SEG.

    Parameters
    ----------
    net : UNet
        The network.
    samples : sequence of Sample
        Validation samples.
    device : torch.device
        Compute device.
    postprocess : PostprocessConfig
        Thresholds for the instance labels.
    precision : str
        Prediction precision.
    targets : list, optional
        Precomputed :func:`make_targets` results for the samples.
    w0, sigma : float
        Border weight map parameters (when targets are computed here).

    Returns
    -------
    dict
        ``loss`` (weighted, same terms as training) and the pooled scores.
    """
    results: list[tuple[dict[float, MatchCounts], SegCounts]] = []
    total, count = 0.0, 0.0
    was_training = net.training
    for i, s in enumerate(samples):
        t = targets[i] if targets is not None else make_targets(s.labels, s.ignore, w0, sigma)
        probs = predict(net, s.image, device=device, precision=precision)
        n_cls = net.config.n_classes
        p = np.clip(probs[:n_cls], 1e-7, 1.0)
        ce = -np.log(np.take_along_axis(p, t.classes[None].astype(np.int64), 0)[0])
        valid = t.weight > 0
        d = np.clip(probs[n_cls], 1e-6, 1 - 1e-6)
        dt = np.clip(t.distance, 1e-6, 1 - 1e-6)
        bce = -(dt * np.log(d) + (1 - dt) * np.log(1 - d))
        ent = -(dt * np.log(dt) + (1 - dt) * np.log(1 - dt))
        total += float((ce * t.weight).sum() + ((bce - ent) * valid).sum())
        count += float(valid.sum())
        results.append(matching(s.labels, instances(probs, postprocess, n_cls), ignore=s.ignore))
    net.train(was_training)
    scores = pool(results).to_dict()
    scores["loss"] = total / max(count, 1.0)
    return scores


def _better(a: dict[str, float], b: dict[str, float] | None, select_by: str) -> bool:
    """Whether validation scores ``a`` beat ``b``."""
    if b is None:
        return True
    if select_by == "loss":
        return a["loss"] < b["loss"]
    if a["ap50"] != b["ap50"]:
        return a["ap50"] > b["ap50"]
    return a["loss"] < b["loss"]


def _set_trainable(net: UNet, config: TrainConfig) -> list[torch.nn.Parameter]:
    net.train()
    for p in net.parameters():
        p.requires_grad_(True)
    if config.freeze_encoder:
        for mod in net.encoder:
            mod.eval()  # keep the encoder's normalisation statistics too
            for p in mod.parameters():
                p.requires_grad_(False)
    if config.freeze_norm:
        for mod in net.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.eval()  # normalise with the starting model's statistics, and keep them
    if config.head_only:
        for name, mod in net.named_children():
            if name != "head":
                mod.eval()  # the features as the starting model makes them, statistics included
                for p in mod.parameters():
                    p.requires_grad_(False)
    return [p for p in net.parameters() if p.requires_grad]


@torch.no_grad()
def _pull(params: list[torch.nn.Parameter], anchor: list[torch.Tensor], amount: float) -> None:
    """Move each parameter ``amount`` (0-1) of its distance back toward its anchor value."""
    for p, a in zip(params, anchor):
        p.lerp_(a, amount)


def _lr_factor(step: int, fraction: float, warmup: int) -> float:
    warm = min(1.0, (step + 1) / max(warmup, 1))
    return warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(fraction, 1.0))))


def check_patch(patch_size: int, architecture: UNetConfig) -> None:
    """Check that square training patches of ``patch_size`` pixels fit a network of ``architecture``.

    Raises
    ------
    InputError
        When the side is not a multiple of ``2**depth`` (the network's poolings), naming the nearest that is.
    """
    m = architecture.size_multiple
    if patch_size % m:
        raise InputError(
            f"patches of {patch_size} px do not fit a network of depth {architecture.depth}: "
            f"the patch size must be a multiple of {m} (e.g. {max(m, round(patch_size / m) * m)})"
        )


def iter_train(
    net: UNet,
    train_samples: Sequence[Sample],
    val_samples: Sequence[Sample],
    config: TrainConfig = TrainConfig(),
    device: torch.device | str = "cpu",
    postprocess: PostprocessConfig = PostprocessConfig(),
    stop: StopFlag | None = None,
    checkpoint_every_s: float | None = None,
    resume: dict[str, Any] | None = None,
) -> Generator[TrainEvent, None, TrainResult]:
    """Train ``net`` and finally load the best weights into it.

    Parameters
    ----------
    net : UNet
        Network to train (its weights are the starting point).
    train_samples, val_samples : sequence of Sample
        Training and validation data (see :func:`split_validation`). Without
        validation samples, the weights at the end of the run are kept.
    config : TrainConfig
        Settings.
    device : torch.device or str
        Training device.
    postprocess : PostprocessConfig
        Thresholds used to score validation instances.
    stop : StopFlag, optional
        When set, the run ends after the current step and keeps the best weights.
    checkpoint_every_s : float, optional
        Seconds between ``"checkpoint"`` events carrying the whole training state
        (weights, optimiser, step, elapsed time, best weights, random generators).
    resume : dict, optional
        A checkpoint from an earlier run of the same samples and ``config``: the run goes
        on from it (step count, learning-rate schedule, elapsed part of the time budget,
        optimiser moments and best weights included) instead of starting over.

    Yields
    ------
    TrainEvent
        ``"start"``, then ``"step"`` after every step, ``"val"`` after every validation
        and ``"checkpoint"`` every ``checkpoint_every_s`` seconds.

    Returns
    -------
    TrainResult
        Scores of the starting and the best weights, and the run's history.

    Raises
    ------
    TrainingError
        If the loss becomes non-finite or memory runs out even at batch size 1;
        the network is then left as it was.
    """
    check_patch(config.patch_size, net.config)  # before any work, not at the first step after the starting validation
    device = torch.device(device)
    t0 = time.perf_counter()
    budget_s = config.minutes * 60 if config.minutes is not None else math.inf
    # train a copy: the caller's network only ever receives the final best weights, so a run
    # that fails, is stopped by closing the generator, or crashes leaves it untouched
    user_net = net
    # channels-last memory: the convolutions of a training step run 1.4x faster on a 2-core CPU in bf16
    # (125 -> 88 ms for 8 patches of 128 px, measured in docs/performance.md); values are unchanged
    net = copy.deepcopy(user_net).to(device, memory_format=torch.channels_last)
    sampler = PatchSampler(train_samples, config, device)
    val_targets = [make_targets(s.labels, s.ignore, config.w0, config.sigma) for s in val_samples]
    dtype = training_dtype(device, config.precision)
    params = _set_trainable(net, config)
    # the starting weights the anchor pulls toward (a resumed run brings them from its checkpoint)
    start_weights = [p.detach().clone() for p in params] if config.anchor > 0 else None
    opt = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    history: list[dict[str, Any]] = []
    batch = config.batch_size
    warmup = 50 if config.steps is None else min(50, max(1, config.steps // 20))

    def fraction(step: int) -> float:
        f_time = (time.perf_counter() - t0) / budget_s
        f_step = step / config.steps if config.steps else 0.0
        return min(1.0, max(f_time, f_step))

    def eta(step: int, f: float) -> float:
        el = time.perf_counter() - t0
        if config.steps and step:
            by_steps = el / step * (config.steps - step)
            return min(by_steps, budget_s - el) if budget_s < math.inf else by_steps
        return max(budget_s - el, 0.0) if budget_s < math.inf else 0.0

    def run_val(step: int) -> dict[str, float]:
        scores = validate(net, val_samples, device, postprocess, config.precision, val_targets)
        _set_trainable(net, config)
        return scores

    baseline = best = None
    best_state = None
    own = own_state = None  # the best of the run's own validations (after the start) and its weights
    step, patches, bad, stopped = 0, 0, 0, False
    if resume is not None:
        from .checkpoint import check_resume

        check_resume(resume, config)
        net.load_state_dict(resume["net"])
        opt.load_state_dict(resume["optimizer"])
        step, patches, batch = int(resume["step"]), int(resume["patches"]), int(resume["batch_size"])
        t0 = time.perf_counter() - float(resume["elapsed"])  # the budget and schedule go on where they were
        baseline, best, best_state = resume["baseline"], resume["best"], resume["best_state"]
        own = resume.get("own")  # not in checkpoints written before 2026-12-06: the run's own best starts over
        own_state = resume.get("own_state") or (best_state if own is not None else None)
        if resume.get("anchor") is not None:
            start_weights = [t.to(device) for t in resume["anchor"]]
        history = list(resume["history"])
        sampler.set_state(resume["rng"])
        if resume.get("scaler"):  # fp16: the loss scale the run had reached (it skips steps that overflow)
            scaler.load_state_dict(resume["scaler"])
    elif val_samples:
        baseline = run_val(0)
        best, best_state = baseline, copy.deepcopy(net.state_dict())
        history.append({"step": 0, "time": time.perf_counter() - t0, "val": baseline})
    # trust in the starting model, measured on the user's validation data: the pull it earns
    trust = float(baseline["ap50"]) if baseline is not None else 0.0
    trust = trust if math.isfinite(trust) else 0.0
    pull = config.anchor * trust
    anchor = start_weights if pull > 0 else None

    def checkpoint() -> dict[str, Any]:
        from .checkpoint import CHECKPOINT_FORMAT

        return {
            "format": CHECKPOINT_FORMAT,
            "config": config.to_dict(),
            "net": copy.deepcopy(net.state_dict()),
            "optimizer": copy.deepcopy(opt.state_dict()),
            "step": step,
            "patches": patches,
            "batch_size": batch,
            "elapsed": time.perf_counter() - t0,
            "baseline": baseline,
            "best": best,
            "best_state": copy.deepcopy(best_state) if best_state is not None else None,
            "own": own,
            "own_state": None if own_state is best_state else copy.deepcopy(own_state),  # None: best_state
            "history": list(history),
            "rng": sampler.get_state(),
            "anchor": None if anchor is None else [t.detach().clone() for t in anchor],
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "since_val": time.perf_counter() - last_val,  # a time-based validation schedule goes on where it was
        }

    expected = config.minutes * 60 if config.minutes is not None else math.nan
    yield TrainEvent(
        "start",
        0,
        0.0,
        time.perf_counter() - t0,
        expected,
        val=baseline,
        message=f"training on {sum(s.n_annotated for s in train_samples)} annotated pixels "
        f"({len(train_samples)} sample(s)), validating on {len(val_samples)}"
        + (f"; held near the starting weights (anchor {pull:.3g})" if anchor is not None else "")
        + (f"; resumed at step {step}" if resume is not None else ""),
    )
    last_val = last_ckpt = time.perf_counter()
    if resume is not None:
        last_val -= float(resume.get("since_val") or 0.0)
    while True:
        f = fraction(step)
        if f >= 1.0:
            break
        if stop is not None and stop.is_set():
            stopped = True
            break
        for g in opt.param_groups:
            g["lr"] = config.learning_rate * _lr_factor(step, f, warmup)
        try:
            x, cls, w, dist = sampler.batch(batch)
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                logits = net(x)
            l_cls, l_dist = loss_terms(logits, cls, w, dist, net.config.n_classes)
            loss = l_cls + config.dist_weight * l_dist
            opt.zero_grad(set_to_none=True)
            if not torch.isfinite(loss):
                bad += 1
                if bad >= 3:
                    raise TrainingError(
                        f"the loss became {loss.item()} (not a number) at step {step}; training "
                        "stopped and the model is unchanged. Try a lower learning rate or fp32."
                    )
                continue
            bad = 0
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            if anchor is not None:
                _pull(params, anchor, opt.param_groups[0]["lr"] * pull)
        except torch.OutOfMemoryError as exc:
            opt.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if batch == 1:
                raise TrainingError(
                    "out of memory even with one patch per step; use a smaller patch size "
                    "or the CPU. The model is unchanged."
                ) from exc
            batch = max(1, batch // 2)
            continue
        step += 1
        patches += batch
        lv = float(loss.detach())
        f = fraction(step)
        history.append({"step": step, "time": time.perf_counter() - t0, "loss": lv})
        yield TrainEvent("step", step, f, time.perf_counter() - t0, eta(step, f), loss=lv)
        done = f >= 1.0 or (stop is not None and stop.is_set())
        if config.val_every_steps is not None:
            due = step % config.val_every_steps == 0
        else:
            due = time.perf_counter() - last_val >= config.val_every_s
        if val_samples and (due or done):
            scores = run_val(step)
            last_val = time.perf_counter()
            is_best = _better(scores, best, config.select_by)
            if is_best:
                best, best_state = scores, copy.deepcopy(net.state_dict())
            if _better(scores, own, config.select_by):
                own, own_state = scores, best_state if is_best else copy.deepcopy(net.state_dict())
            history.append({"step": step, "time": time.perf_counter() - t0, "val": scores})
            f = fraction(step)
            yield TrainEvent(
                "val",
                step,
                f,
                time.perf_counter() - t0,
                eta(step, f),
                val=scores,
                is_best=is_best,
                best_state=best_state if is_best else None,
            )
        if checkpoint_every_s is not None and not done and time.perf_counter() - last_ckpt >= checkpoint_every_s:
            last_ckpt = time.perf_counter()
            f = fraction(step)
            yield TrainEvent("checkpoint", step, f, time.perf_counter() - t0, eta(step, f), checkpoint=checkpoint())
    user_net.load_state_dict(best_state if best_state is not None else net.state_dict())
    user_net.eval()
    improved = bool(val_samples) and best is not baseline and _better(best, baseline, config.select_by)
    return TrainResult(
        baseline=baseline,
        best=best,
        improved=improved,
        stopped=stopped,
        steps=step,
        patches=patches,
        seconds=time.perf_counter() - t0,
        history=history,
        batch_size=batch,
        anchor=pull,
        trust=trust,
        trained=own,
        trained_state=None if improved or own_state is best_state else own_state,
    )
