"""The Fine-tune section's worker generator (no napari window: the generator is driven by hand)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np

from napari_unet_loop.core.postprocess import PostprocessConfig
from napari_unet_loop.core.sampling import Sample
from napari_unet_loop.core.train import TrainConfig, TrainEvent
from napari_unet_loop.gui import _train_worker
from napari_unet_loop.gui._train_worker import Finished, train_in_worker


def test_a_stop_that_ended_the_training_does_not_end_the_threshold_check(monkeypatch):
    """Stop ends the training; the check of the thresholds on the training images then runs and says so, and
    a Stop pressed during it ends it (before, the check said nothing and a Stop during it was not heard)."""
    stop = threading.Event()
    result = SimpleNamespace(steps=7, seconds=3.0, trust=0.4, trained_state=None)

    def fake_train(*args, **kwargs):
        assert kwargs["stop"] is stop
        stop.set()  # the user pressed Stop: the training ends with its best weights
        yield TrainEvent("step", 7, 0.5, 3.0, 3.0, loss=0.1)
        return result

    seen = {}

    def fake_retune(net, val, device, start, precision, trust, whole, stop=None):
        seen.update(flag=stop, set_at_start=stop.is_set(), trust=trust, whole=whole)
        return SimpleNamespace(postprocess=start)

    monkeypatch.setattr(_train_worker, "iter_train", fake_train)
    monkeypatch.setattr(_train_worker, "retune", fake_retune)
    sample = Sample(np.zeros((1, 40, 40), np.float32), np.zeros((40, 40), np.int32))
    pp = PostprocessConfig()
    events = list(train_in_worker(None, [sample], [sample], TrainConfig(), "cpu", pp, stop, whole=[sample]))
    kinds = [e.kind if isinstance(e, TrainEvent) else type(e).__name__ for e in events]
    assert kinds == ["step", "check", "Finished"]
    assert events[1].message == "choosing thresholds for the new weights" and events[1].fraction == 1.0
    assert seen["flag"] is stop and seen["set_at_start"] is False and seen["whole"] == [sample]
    assert isinstance(events[-1], Finished) and events[-1].postprocess is pp
