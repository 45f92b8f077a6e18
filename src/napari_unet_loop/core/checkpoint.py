"""Training checkpoints: the whole state of a run, written atomically, read without running code.

``iter_train(..., checkpoint_every_s=...)`` yields the state; :func:`save_checkpoint` writes it
(tensors and plain data only) and :func:`load_checkpoint` reads it back with
``torch.load(weights_only=True)`` for ``iter_train(..., resume=state)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .errors import TrainingError

if TYPE_CHECKING:
    from .train import TrainConfig

CHECKPOINT_FORMAT = 1
# what ``iter_train(..., resume=state)`` reads: a checkpoint without one of these cannot continue a run
_STATE_KEYS = (
    "net",
    "optimizer",
    "step",
    "patches",
    "batch_size",
    "elapsed",
    "baseline",
    "best",
    "best_state",
    "history",
    "rng",
    "config",
)


def check_resume(state: dict[str, Any], config: TrainConfig) -> None:
    """Check that a checkpoint can continue a run with ``config``.

    Raises
    ------
    TrainingError
        If it is not a training checkpoint of this format, or its settings differ.
    """
    differ = setting_differences(run_settings(state, type(config)), config)
    if differ:
        raise TrainingError(f"the checkpoint was made with other training settings ({', '.join(differ)})")


def run_settings(state: dict[str, Any], kind: type[TrainConfig]) -> TrainConfig:
    """The training settings a checkpointed run was started with: the ones that continue it.

    A setting added to :class:`~napari_unet_loop.core.train.TrainConfig` since the checkpoint was
    written takes its default, which is off (what the run did then), so a run goes on as it began
    even after a release changes the presets.

    Parameters
    ----------
    state : dict
        From :func:`load_checkpoint`.
    kind : type
        :class:`~napari_unet_loop.core.train.TrainConfig` (passed in: this module does not import
        the training loop that imports it).

    Raises
    ------
    TrainingError
        If it is not a training checkpoint of this format, or its settings cannot be read.
    """
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError("not a training checkpoint of this version of napari-unet-loop")
    try:
        return kind.from_dict(dict(state.get("config") or {}))
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"the checkpoint's training settings cannot be read ({exc})") from None


def setting_differences(a: TrainConfig, b: TrainConfig) -> list[str]:
    """Names of the settings in which two training configurations differ, sorted."""
    da, db = a.to_dict(), b.to_dict()
    return sorted(k for k in set(da) | set(db) if _plain(da.get(k)) != _plain(db.get(k)))


def _plain(value: Any) -> Any:
    """Tuples as lists, so settings read back from a file compare equal."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
    """Write a training checkpoint atomically (a crash mid-write leaves the previous one).

    Parameters
    ----------
    state : dict
        From a ``"checkpoint"`` :class:`TrainEvent`.
    path : path-like
        Target file.
    extra : dict, optional
        More to store beside it (e.g. the model card as JSON), strings and numbers only.
    """
    from .atomic import atomic_path

    payload = dict(state)
    payload["rng"] = dict(state["rng"])
    payload["json"] = json.dumps(
        {k: payload.pop(k) for k in ("config", "baseline", "best", "history")} | {"extra": extra or {}}
    )
    with atomic_path(path) as tmp:  # which syncs the file to disk before renaming it
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors and plain data only, no code).

    Returns
    -------
    tuple of dict
        The state for ``iter_train(..., resume=state)`` and the ``extra`` stored with it.

    Raises
    ------
    TrainingError
        If the file is not a readable checkpoint.
    """
    path = Path(path)
    what = "the <out>.ckpt file that train writes while it runs"
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except IsADirectoryError as exc:
        raise TrainingError(f"{path} is a folder, not a training checkpoint ({what})") from exc
    except (FileNotFoundError, PermissionError) as exc:  # the system's reason, in one line
        raise TrainingError(f"cannot read the training checkpoint {path}: {exc.strerror or exc}") from exc
    except Exception as exc:  # noqa: BLE001 - torch and pickle raise many kinds for files that are something else
        raise TrainingError(f"{path} is not a training checkpoint, or a damaged one ({what})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path} is not a training checkpoint of this version of napari-unet-loop ({what})")
    try:
        meta = json.loads(payload.pop("json"))
        extra = meta.pop("extra", {})
        if not isinstance(extra, dict):
            raise TypeError("extra is not a mapping")
        payload.update(meta)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TrainingError(f"{path} is a damaged training checkpoint: its settings cannot be read ({exc})") from exc
    missing = [k for k in _STATE_KEYS if k not in payload]
    if missing:
        raise TrainingError(f"{path} is a damaged training checkpoint: it lacks {', '.join(missing)}")
    return payload, extra
