"""Generators for the Fine-tune section's worker thread (no napari layers are touched here)."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass

import torch

from ..core.postprocess import PostprocessConfig
from ..core.retune import Retuned, retune
from ..core.sampling import Sample
from ..core.train import TrainConfig, TrainEvent, TrainingError, TrainResult, iter_train
from ._segment_worker import Failure


@dataclass
class Finished:
    """The run ended: the network holds the best weights (the run's own best when none beat the start's).

    Attributes
    ----------
    result : TrainResult
        Scores and history of the run.
    postprocess : PostprocessConfig
        Thresholds for the new weights: what :func:`~napari_unet_loop.core.retune.retune` kept
        (re-tuned on the validation samples when that beat the noise, or the foreground threshold
        the training images ask for), else the starting ones (also without validation data).
    tuned : Retuned or None
        The threshold search and its verdict (``None`` without validation data, or when it failed).
    note : str
        What went wrong after the training, to say (the trained weights are kept all the same).
    """

    result: TrainResult
    postprocess: PostprocessConfig
    tuned: Retuned | None = None
    note: str = ""


def train_in_worker(
    net: torch.nn.Module,
    train: Sequence[Sample],
    val: Sequence[Sample],
    config: TrainConfig,
    device: torch.device,
    postprocess: PostprocessConfig,
    stop,
    whole: Sequence[Sample] | None = None,
) -> Generator[TrainEvent | Finished | Failure, None, None]:
    """Run :func:`iter_train`, turning its known failures into a :class:`Failure` message.

    Out-of-memory at batch size 1, a non-finite loss and unusable data end the run
    with a message; the network handed in is then unchanged. When no weights beat the starting
    ones on validation, the network is given the run's own best (:attr:`TrainResult.trained_state`):
    the model the dock offers to use anyway, the starting one staying in use. After training, the
    thresholds are re-tuned for the new weights on the validation samples, and checked on
    the training images ``whole`` (see :func:`~napari_unet_loop.core.retune.retune`): a
    ``"check"`` event says so, and ``stop`` (a :class:`threading.Event`, cleared when the
    training ends) set during that check ends it with the starting thresholds kept. A search
    that fails keeps the starting thresholds and says why (:attr:`Finished.note`): the trained
    weights are not lost to it.
    """
    try:
        result = yield from iter_train(net, train, val, config, device, postprocess, stop=stop)
    except (TrainingError, ValueError) as exc:
        yield Failure(str(exc))
        return
    if result.trained_state is not None:  # none beat the start's: the run's own best, to offer
        net.load_state_dict(result.trained_state)
    if not val:
        yield Finished(result, postprocess)
        return
    # a Stop that ended the training is spent: one pressed from here on ends the check on the training images
    stop.clear()
    yield TrainEvent("check", result.steps, 1.0, result.seconds, 0.0, message="choosing thresholds for the new weights")
    try:
        retuned = retune(net, val, device, postprocess, config.precision, result.trust, whole, stop=stop)
    except Exception as exc:  # noqa: BLE001 - a failed search must not lose minutes of training
        note = f"Choosing thresholds for the new weights failed ({type(exc).__name__}: {exc}); kept the starting ones."
        yield Finished(result, postprocess, None, note)
        return
    yield Finished(result, retuned.postprocess, retuned)
