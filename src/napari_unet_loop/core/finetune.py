"""The training presets shared by the dock's Fine-tune and the command line's ``train``.

One home for the settings a user does not choose, so ``napari-unet-loop train --from default``
trains as the dock's Fine-tune does (same patch, batch, learning rate, normalisation statistics,
augmentation, validation interval), and training from scratch with the batch and learning rate of
the shipped model's first stage, plus a light blur.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .augment import AugmentConfig
from .image import InputError
from .sampling import Sample
from .train import TrainConfig

MIN_ANNOTATED_PX = 32 * 32  # less reviewed area than a 32 x 32 patch teaches nothing reliable

FINE_TUNE = {
    "patch_size": 128,
    "batch_size": 8,
    "learning_rate": 5e-4,
    # a few images: keep the starting model's normalisation statistics (measured in docs/model.md)
    "freeze_norm": True,
    "blur": 0.0,
}
FROM_SCRATCH = {
    "patch_size": 128,
    "batch_size": 16,
    "learning_rate": 2e-3,
    "freeze_norm": False,
    "blur": 1.0,  # out-of-focus and dim nuclei, for a model meant for many kinds of image
}


def validation_interval(minutes: float | None) -> float:
    """Seconds between validations: ten per run, at least every 10 s (60 s for a step budget)."""
    return max(10.0, minutes * 60 / 10) if minutes else 60.0


def preset(fine_tune: bool, minutes: float | None = 5.0, **overrides: Any) -> TrainConfig:
    """Training settings for fine-tuning a model (``fine_tune``) or training one from scratch.

    Parameters
    ----------
    fine_tune : bool
        Start from a trained model (the dock's Fine-tune, ``train --from MODEL``) or from
        random weights (``train --from scratch``).
    minutes : float or None
        Time budget (``None`` with ``steps`` in ``overrides``).
    **overrides
        Any :class:`~napari_unet_loop.core.train.TrainConfig` field the user set; ``None``
        values keep the preset.

    Returns
    -------
    TrainConfig
        The settings.

    Examples
    --------
    >>> preset(True, minutes=5).batch_size
    8
    >>> preset(False, minutes=60, batch_size=32).batch_size
    32
    """
    base: dict[str, Any] = dict(FINE_TUNE if fine_tune else FROM_SCRATCH)
    base["minutes"] = minutes
    base["val_every_s"] = validation_interval(minutes)
    base["augment"] = AugmentConfig(blur=base.pop("blur"))
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**base)


def check_samples(samples: Sequence[Sample]) -> int:
    """Refuse training data that cannot teach anything: the one check the dock and ``train`` share.

    Parameters
    ----------
    samples : sequence of Sample
        The annotated training samples.

    Returns
    -------
    int
        Number of annotated (reviewed) pixels.

    Raises
    ------
    InputError
        Without samples, when the labels hold no objects in the reviewed pixels, or when fewer
        than :data:`MIN_ANNOTATED_PX` pixels are annotated.
    """
    if not samples:
        raise InputError("nothing to train on: no annotated image or plane")
    annotated = sum(s.n_annotated for s in samples)
    objects = sum(int((s.labels[~s.ignore] if s.ignore is not None else s.labels).max(initial=0) > 0) for s in samples)
    if objects == 0:
        raise InputError("the labels hold no objects (all background): nothing to learn from")
    if annotated < MIN_ANNOTATED_PX:
        raise InputError(
            f"only {annotated} pixels are annotated; review at least {MIN_ANNOTATED_PX} pixels "
            "(e.g. a 32 x 32 area) to train"
        )
    return annotated


def training_record(
    config: TrainConfig,
    device: Any,
    train: Sequence[Sample | str],
    val: Sequence[Sample | str],
    *,
    steps: int,
    seconds: float,
    modality: str,
    patches: int | None = None,
    stopped: bool = False,
    started: str | None = None,
    data: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The model card's ``training`` record: one schema for models trained in the dock and by ``train``.

    Parameters
    ----------
    config : TrainConfig
        The settings.
    device : torch.device or str
        Where it trained.
    train, val : sequence of Sample or str
        Training and validation samples, or their names (the names are listed).
    steps, seconds, patches : int, float, int
        How much training happened.
    modality : str
        How the images were converted (``"auto"``, a kind, or ``"none"``).
    stopped : bool
        Whether the user stopped the run early.
    started : str, optional
        ISO date and time the run started.
    data : dict, optional
        More about the data (e.g. folders, the dock's layer pairs, annotated pixels).
    **extra
        Further fields of the front end (e.g. the command line, the split lists).

    Returns
    -------
    dict
        ``data`` (``n_train``, ``n_val``, ``train_names``, ``val_names`` and ``data``'s fields),
        ``config``, ``device``, ``started``, ``steps``, ``patches``, ``seconds``, ``stopped_by_user``,
        ``validated`` (whether anything was validated), ``modality``, then ``extra``.
    """
    return {
        "data": {
            **(data or {}),
            "n_train": len(train),
            "n_val": len(val),
            "train_names": sorted(s if isinstance(s, str) else s.name for s in train),
            "val_names": sorted(s if isinstance(s, str) else s.name for s in val),
        },
        "config": config.to_dict(),
        "device": str(device),
        "started": started,
        "steps": steps,
        "patches": patches,
        "seconds": round(float(seconds), 1),
        "stopped_by_user": bool(stopped),
        "validated": bool(val),
        "modality": modality,
        **extra,
    }
