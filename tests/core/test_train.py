import threading

import numpy as np
import pytest
import torch

from napari_unet_loop.core import checkpoint as checkpoint_mod
from napari_unet_loop.core import train as train_mod
from napari_unet_loop.core.augment import NO_AUGMENT, AugmentConfig
from napari_unet_loop.core.errors import InputError
from napari_unet_loop.core.postprocess import PostprocessConfig
from napari_unet_loop.core.sampling import PatchSampler, Sample, balance_kinds, split_validation
from napari_unet_loop.core.train import (
    TrainConfig,
    TrainEvent,
    TrainingError,
    TrainResult,
    iter_train,
    loss_terms,
    training_dtype,
    validate,
)
from napari_unet_loop.core.unet import UNet, UNetConfig

EASY_AUGMENT = AugmentConfig(rotate=False, zoom=(1.0, 1.0), elastic_sigma=0.0, intensity=0.0)


def _config(**kw):
    base = dict(
        patch_size=32,
        batch_size=4,
        steps=5,
        minutes=None,
        precision="fp32",
        learning_rate=1e-2,
        val_every_s=1e9,
        augment=EASY_AUGMENT,
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture
def sample(discs, disc_img):
    labels = discs((64, 64), 6, seed=1)
    return Sample(disc_img(labels, seed=1), labels, name="discs")


@pytest.fixture
def val_sample(discs, disc_img):
    labels = discs((48, 48), 3, seed=2)
    return Sample(disc_img(labels, seed=2), labels, name="val")


def _drain(gen):
    """Run a training generator; return its events and result."""
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return events, stop.value


def _state(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_a_few_steps(tiny_net, sample):
    start = _state(tiny_net)
    events, result = _drain(iter_train(tiny_net, [sample], [], _config(steps=5)))
    assert isinstance(result, TrainResult)
    assert events[0].kind == "start" and events[0].step == 0
    steps = [e for e in events if e.kind == "step"]
    assert [e.step for e in steps] == [1, 2, 3, 4, 5]
    assert all(np.isfinite(e.loss) and e.loss >= 0 for e in steps)
    assert steps[-1].fraction == pytest.approx(1.0)
    assert [e.fraction for e in steps] == sorted(e.fraction for e in steps)
    assert result.steps == 5 and result.patches == 20 and result.batch_size == 4
    assert not result.stopped and not result.improved
    assert result.baseline is None and result.best is None
    assert [h["step"] for h in result.history] == [1, 2, 3, 4, 5]
    # without validation the weights at the end are kept; the network is left in eval mode
    assert not _same(start, _state(tiny_net))
    assert not tiny_net.training
    assert all(p.requires_grad for p in tiny_net.parameters())


def test_a_patch_size_the_network_cannot_take_is_refused_before_any_work(tiny_net, sample, val_sample, monkeypatch):
    monkeypatch.setattr(train_mod, "validate", lambda *a, **k: pytest.fail("validated before refusing"))
    start = _state(tiny_net)
    with pytest.raises(InputError, match="multiple of 4 \\(e.g. 32\\)"):
        next(iter_train(tiny_net, [sample], [val_sample], _config(patch_size=34)))
    assert _same(start, _state(tiny_net))


def test_stop_flag_ends_the_run_early(tiny_net, sample):
    stop = threading.Event()
    gen = iter_train(tiny_net, [sample], [], _config(steps=10_000), stop=stop)
    events = []
    while True:
        try:
            e = next(gen)
        except StopIteration as s:
            result = s.value
            break
        events.append(e)
        if e.kind == "step" and e.step == 2:
            stop.set()
    assert result.stopped
    assert result.steps == 2
    assert max(e.step for e in events) == 2


def test_stop_before_the_first_step(tiny_net, sample):
    stop = threading.Event()
    stop.set()
    start = _state(tiny_net)
    _, result = _drain(iter_train(tiny_net, [sample], [], _config(steps=100), stop=stop))
    assert result.stopped and result.steps == 0
    assert _same(start, _state(tiny_net))


def test_time_budget_ends_the_run(tiny_net, sample):
    _, result = _drain(iter_train(tiny_net, [sample], [], _config(steps=None, minutes=0.005)))
    assert not result.stopped
    assert 0.3 <= result.seconds < 10


def _scripted_validate(monkeypatch, ap50s, seen_weights=None):
    """Replace validation by a script of AP50 scores (baseline first).

    If ``seen_weights`` is a list, the weights of the network being validated are appended to it.
    """
    scores = iter(ap50s)

    def fake(net, samples, device, postprocess, precision="auto", targets=None, w0=10.0, sigma=5.0):
        if seen_weights is not None:
            seen_weights.append(_state(net))
        return {"ap50": next(scores), "loss": 1.0}

    monkeypatch.setattr(train_mod, "validate", fake)


def test_keep_best_loads_the_best_validated_weights(tiny_net, sample, val_sample, monkeypatch):
    validated = []  # weights of the network at each validation (baseline first)
    _scripted_validate(monkeypatch, [0.2, 0.3, 0.9, 0.5, 0.4, 0.1], validated)
    start = _state(tiny_net)
    gen = iter_train(tiny_net, [sample], [val_sample], _config(steps=5, val_every_s=0.0))
    best_flags = {}
    while True:
        try:
            e = next(gen)
        except StopIteration as s:
            result = s.value
            break
        if e.kind == "val":
            best_flags[e.step] = e.is_best
            assert _same(start, _state(tiny_net))  # the caller's network is untouched during the run
    assert [best_flags[k] for k in range(1, 6)] == [True, True, False, False, False]
    assert len(validated) == 6
    final = _state(tiny_net)
    assert _same(final, validated[2])
    assert not _same(final, validated[5])
    assert not _same(final, validated[0])
    assert result.best["ap50"] == 0.9 and result.baseline["ap50"] == 0.2
    assert result.improved
    assert result.trained == result.best and result.trained_state is None  # the network holds them


def test_validation_at_fixed_steps_ignores_the_clock(tiny_net, sample, val_sample, monkeypatch):
    """With ``val_every_steps`` the validations fall on the same steps however fast the machine runs."""
    _scripted_validate(monkeypatch, [0.1, 0.2, 0.3, 0.4])
    config = _config(steps=6, val_every_steps=2, val_every_s=0.0)  # by time it would validate at every step
    events, result = _drain(iter_train(tiny_net, [sample], [val_sample], config))
    assert [e.step for e in events if e.kind == "val"] == [2, 4, 6]
    assert [h["step"] for h in result.history if "val" in h] == [0, 2, 4, 6]
    with pytest.raises(ValueError, match="val_every_steps"):
        _config(val_every_steps=0)


def test_keep_best_reverts_to_the_start_when_training_makes_things_worse(tiny_net, sample, val_sample, monkeypatch):
    validated = []
    _scripted_validate(monkeypatch, [0.8, 0.5, 0.7, 0.6], validated)
    start = _state(tiny_net)
    _, result = _drain(iter_train(tiny_net, [sample], [val_sample], _config(steps=3, val_every_s=0.0)))
    assert _same(start, _state(tiny_net))
    assert not result.improved
    assert result.best == result.baseline == {"ap50": 0.8, "loss": 1.0}
    # the run's own best (step 2), for a user who wants the fine-tuned model anyway
    assert result.trained == {"ap50": 0.7, "loss": 1.0}
    assert _same(result.trained_state, validated[2]) and not _same(result.trained_state, start)


def test_a_resumed_run_keeps_its_own_best_from_before_the_cut(tiny_net, sample, val_sample, tmp_path, monkeypatch):
    """None beats the start; the run's own best came before the cut: the resumed run offers the same weights."""
    config = _config(steps=6, val_every_s=0.0)
    whole = UNet(tiny_net.config)
    whole.load_state_dict(tiny_net.state_dict())
    _scripted_validate(monkeypatch, [0.9, 0.3, 0.6, 0.2, 0.5, 0.1, 0.4])
    events, uncut = _drain(iter_train(whole, [sample], [val_sample], config, checkpoint_every_s=0.0))
    path = tmp_path / "run.ckpt"
    checkpoint_mod.save_checkpoint([e for e in events if e.kind == "checkpoint"][2].checkpoint, path)
    state, _ = checkpoint_mod.load_checkpoint(path)
    _scripted_validate(monkeypatch, [0.5, 0.1, 0.4])  # steps 4-6
    _, resumed = _drain(iter_train(UNet(tiny_net.config), [sample], [val_sample], config, resume=state))
    assert not uncut.improved and not resumed.improved
    assert uncut.trained["ap50"] == resumed.trained["ap50"] == 0.6
    for k, v in uncut.trained_state.items():
        torch.testing.assert_close(resumed.trained_state[k], v)


def test_real_validation_runs(tiny_net, sample, val_sample):
    events, result = _drain(iter_train(tiny_net, [sample], [val_sample], _config(steps=3)))
    vals = [e for e in events if e.kind == "val"]
    assert len(vals) == 1 and vals[0].step == 3  # validated at the end of the budget
    for key in ("ap50", "ap75", "f1_50", "pq", "seg", "loss"):
        assert key in result.baseline and key in result.best
    assert np.isfinite(result.best["loss"])
    assert events[0].val == result.baseline


def test_nan_image_raises_and_leaves_the_weights_unchanged(tiny_net, discs):
    labels = discs((64, 64), 5)
    image = np.full(labels.shape, np.nan, np.float32)
    start = _state(tiny_net)
    with pytest.raises(TrainingError, match="not a number"):
        _drain(iter_train(tiny_net, [Sample(image, labels)], [], _config(steps=20)))
    assert _same(start, _state(tiny_net))  # batch-norm statistics included


def test_nan_loss_after_some_steps_restores_the_starting_weights(tiny_net, sample, monkeypatch):
    calls = {"n": 0}
    real = train_mod.loss_terms

    def flaky(*args, **kwargs):
        calls["n"] += 1
        cls_loss, dist_loss = real(*args, **kwargs)
        if calls["n"] > 3:
            return cls_loss * float("nan"), dist_loss
        return cls_loss, dist_loss

    monkeypatch.setattr(train_mod, "loss_terms", flaky)
    start = _state(tiny_net)
    gen = iter_train(tiny_net, [sample], [], _config(steps=20))
    steps = 0
    with pytest.raises(TrainingError):
        for e in gen:
            if e.kind == "step":
                steps = e.step
    assert steps == 3
    assert _same(start, _state(tiny_net))


def test_a_single_bad_step_is_skipped(tiny_net, sample, monkeypatch):
    calls = {"n": 0}
    real = train_mod.loss_terms

    def once_nan(*args, **kwargs):
        calls["n"] += 1
        cls_loss, dist_loss = real(*args, **kwargs)
        return (cls_loss * float("nan") if calls["n"] == 2 else cls_loss), dist_loss

    monkeypatch.setattr(train_mod, "loss_terms", once_nan)
    _, result = _drain(iter_train(tiny_net, [sample], [], _config(steps=4)))
    assert result.steps == 4 and calls["n"] == 5


def test_out_of_memory_halves_the_batch(tiny_net, sample, monkeypatch):
    real = PatchSampler.batch

    def small_memory(self, n):
        if n > 2:
            raise torch.OutOfMemoryError("fake")
        return real(self, n)

    monkeypatch.setattr(PatchSampler, "batch", small_memory)
    _, result = _drain(iter_train(tiny_net, [sample], [], _config(steps=3, batch_size=8)))
    assert result.batch_size == 2 and result.steps == 3 and result.patches == 6


def test_out_of_memory_at_batch_one_raises(tiny_net, sample, monkeypatch):
    def no_memory(self, n):
        raise torch.OutOfMemoryError("fake")

    monkeypatch.setattr(PatchSampler, "batch", no_memory)
    start = _state(tiny_net)
    with pytest.raises(TrainingError, match="out of memory"):
        _drain(iter_train(tiny_net, [sample], [], _config(steps=3, batch_size=2)))
    assert _same(start, _state(tiny_net))


def test_freeze_encoder_trains_only_the_expanding_path(tiny_net, sample):
    start = _state(tiny_net)
    _drain(iter_train(tiny_net, [sample], [], _config(steps=3, freeze_encoder=True)))
    end = _state(tiny_net)
    enc = [k for k in start if k.startswith(("down.", "bottom."))]
    dec = [k for k in start if k.startswith(("up.", "merge.", "head."))]
    assert enc and dec
    assert all(torch.equal(start[k], end[k]) for k in enc)  # running statistics too
    assert any(not torch.equal(start[k], end[k]) for k in dec)


def test_head_only_trains_only_the_final_layer(tiny_net, sample):
    start = _state(tiny_net)
    _drain(iter_train(tiny_net, [sample], [], _config(steps=3, head_only=True)))
    end = _state(tiny_net)
    head = [k for k in start if k.startswith("head.")]
    body = [k for k in start if not k.startswith("head.")]
    assert head and body
    assert all(torch.equal(start[k], end[k]) for k in body)  # running statistics too
    assert all(not torch.equal(start[k], end[k]) for k in head)


def test_freeze_norm_keeps_the_statistics_and_trains_the_rest(tiny_net, sample):
    start = _state(tiny_net)
    _drain(iter_train(tiny_net, [sample], [sample], _config(steps=3, freeze_norm=True, val_every_s=0.0)))
    end = _state(tiny_net)
    stats = [k for k in start if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    affine = [k for k in start if k.endswith((".weight", ".bias")) and k.replace("weight", "running_mean") in start]
    assert stats and affine
    assert all(torch.equal(start[k], end[k]) for k in stats)
    assert any(not torch.equal(start[k], end[k]) for k in affine)  # batch-norm scale and shift still train
    # without it the statistics follow the training batches
    _drain(iter_train(tiny_net, [sample], [], _config(steps=3)))
    assert any(not torch.equal(end[k], _state(tiny_net)[k]) for k in stats)


def test_loss_decreases_on_an_easy_task(discs, disc_img):
    labels = discs((96, 96), 12, seed=0)
    s = Sample(disc_img(labels, seed=0), labels)
    torch.manual_seed(0)
    net = UNet(UNetConfig(depth=2, base_width=8))
    events, _ = _drain(iter_train(net, [s], [], _config(steps=40, augment=EASY_AUGMENT)))
    losses = np.array([e.loss for e in events if e.kind == "step"])
    assert len(losses) == 40
    assert losses[-10:].mean() < 0.7 * losses[:5].mean()


def test_split_validation_holds_out_a_stripe(discs, disc_img):
    labels = discs((200, 100), 10, seed=4)
    s = Sample(disc_img(labels), labels, name="tall", kind="he")
    train, val = split_validation([s], fraction=0.15, seed=0)
    assert len(train) == len(val) == 1
    t, v = train[0], val[0]
    assert v.labels.shape == (32, 100)  # max(0.15 * 200, 32) rows of the longer axis
    rows = np.flatnonzero(t.ignore.any(1))
    a = rows[0]
    assert len(rows) == 32 and np.array_equal(rows, np.arange(a, a + 32))
    expected = np.zeros(labels.shape, bool)
    expected[a : a + 32] = True
    np.testing.assert_array_equal(t.ignore, expected)  # the validation stripe is never trained on
    np.testing.assert_array_equal(v.labels, labels[a : a + 32])
    np.testing.assert_array_equal(v.image, s.image[:, a : a + 32])
    assert v.name == "tall[validation]" and v.ignore is None
    assert t.kind == v.kind == "he"  # per-kind scores, and the kind a fine-tune starts from
    np.testing.assert_array_equal(t.labels, labels)
    assert t.n_annotated == labels.size - 32 * 100


def test_split_validation_of_wide_and_partly_ignored_samples(discs, disc_img):
    labels = discs((60, 300), 10, seed=5)
    ignore = np.ones(labels.shape, bool)
    ignore[:, 50:250] = False  # only 200 columns reviewed
    s = Sample(disc_img(labels), labels, ignore=ignore)
    (t,), (v,) = split_validation([s], fraction=0.2, seed=1)
    assert v.labels.shape == (60, 40)  # 0.2 * 200 columns of the reviewed extent
    stripe = np.flatnonzero((t.ignore & ~ignore).any(0))  # newly ignored columns
    assert len(stripe) == 40 and 50 <= stripe[0] and stripe[-1] < 250  # inside the reviewed region
    np.testing.assert_array_equal(stripe, np.arange(stripe[0], stripe[0] + 40))
    assert t.ignore[:, stripe].all()
    assert (t.ignore[ignore]).all()  # what was ignored stays ignored
    np.testing.assert_array_equal(v.ignore, ignore[:, stripe[0] : stripe[0] + 40])


def test_split_validation_leaves_small_samples_and_zero_fraction_alone(discs, disc_img):
    small_labels = discs((60, 60), 3)
    small = Sample(disc_img(small_labels), small_labels)
    train, val = split_validation([small], fraction=0.15)
    assert val == [] and train[0] is small
    labels = discs((200, 100), 5)
    big = Sample(disc_img(labels), labels)
    train, val = split_validation([big], fraction=0.0)
    assert val == [] and train[0] is big


def test_sample_checks_shapes(discs):
    labels = discs((40, 50), 3)
    s = Sample(np.zeros((40, 50), np.float32), labels)
    assert s.image.shape == (1, 40, 50) and s.labels.dtype == np.int64
    assert s.n_annotated == 2000
    with pytest.raises(ValueError, match="differs from image shape"):
        Sample(np.zeros((40, 51), np.float32), labels)
    with pytest.raises(ValueError, match="ignore mask shape"):
        Sample(np.zeros((40, 50), np.float32), labels, ignore=np.zeros((40, 49), bool))
    with pytest.raises(ValueError):
        Sample(np.zeros((40, 50), np.float32), labels - 1.5)


def test_patch_sampler_batches(sample):
    cfg = _config(patch_size=32)
    sampler = PatchSampler([sample], cfg, torch.device("cpu"))
    x, cls, w, dist = sampler.batch(5)
    assert x.shape == (5, 1, 32, 32) and x.dtype == torch.float32
    assert cls.shape == (5, 32, 32) and cls.dtype == torch.int64
    assert set(cls.unique().tolist()) <= {0, 1, 2}
    assert w.shape == dist.shape == (5, 32, 32)
    assert (w > 0).all()
    assert dist.min() >= 0 and dist.max() <= 1


def test_patch_sampler_centres_patches_on_annotated_pixels(discs, disc_img):
    labels = discs((100, 100), 8, seed=6)
    ignore = np.ones(labels.shape, bool)
    ignore[40:50, 60:70] = False
    s = Sample(disc_img(labels), labels, ignore=ignore)
    cfg = _config(patch_size=32, augment=NO_AUGMENT, fg_fraction=0.0)
    sampler = PatchSampler([s], cfg, torch.device("cpu"))
    _, _, w, _ = sampler.batch(16)
    assert (w[:, 16, 16] > 0).all()  # 1 % of the image is annotated, yet every centre is


def test_patch_sampler_without_annotation_is_an_error(sample):
    s = Sample(sample.image, sample.labels, ignore=np.ones(sample.labels.shape, bool))
    with pytest.raises(TrainingError, match="no annotated pixels"):
        PatchSampler([s], _config(), torch.device("cpu"))


def test_loss_terms():
    g = torch.Generator().manual_seed(0)
    classes = torch.randint(0, 3, (2, 8, 8), generator=g)
    distance = torch.rand(2, 8, 8, generator=g) * 0.9 + 0.05
    weight = torch.rand(2, 8, 8, generator=g) + 0.5
    perfect = torch.cat(
        [
            20 * torch.nn.functional.one_hot(classes, 3).permute(0, 3, 1, 2).float(),
            torch.logit(distance)[:, None],
        ],
        dim=1,
    )
    lc, ld = loss_terms(perfect, classes, weight, distance)
    assert float(lc) < 1e-6 and abs(float(ld)) < 1e-5
    wrong = perfect.clone()
    wrong[:, :3] = -wrong[:, :3]
    wrong[:, 3] = -wrong[:, 3]
    lc2, ld2 = loss_terms(wrong, classes, weight, distance)
    assert float(lc2) > 10 and float(ld2) > 0.1
    # doubling the weights doubles the class loss
    lc3, _ = loss_terms(wrong, classes, 2 * weight, distance)
    assert float(lc3) == pytest.approx(2 * float(lc2), rel=1e-5)


def test_loss_terms_ignore_pixels_of_weight_zero():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 4, 8, 8, generator=g)
    classes = torch.randint(0, 3, (1, 8, 8), generator=g)
    distance = torch.rand(1, 8, 8, generator=g)
    weight = torch.ones(1, 8, 8)
    weight[:, :, :4] = 0
    a = loss_terms(logits, classes, weight, distance)
    changed = logits.clone()
    changed[:, :, :, :4] = torch.randn(1, 4, 8, 4, generator=g) * 10
    b = loss_terms(changed, classes, weight, distance)
    assert float(a[0]) == pytest.approx(float(b[0])) and float(a[1]) == pytest.approx(float(b[1]))
    changed[:, 0, :, 4] += 5  # a counted column
    c = loss_terms(changed, classes, weight, distance)
    assert float(c[0]) != pytest.approx(float(a[0]))


def test_validate_scores_and_keeps_the_training_mode(tiny_net, val_sample):
    tiny_net.train()
    scores = validate(tiny_net, [val_sample], torch.device("cpu"), PostprocessConfig(), "fp32")
    assert tiny_net.training
    assert {"loss", "ap50", "ap75", "seg", "pq", "n_true"} <= set(scores)
    assert scores["n_true"] == int(val_sample.labels.max())
    assert np.isfinite(scores["loss"]) and scores["loss"] > 0
    tiny_net.eval()
    validate(tiny_net, [val_sample], torch.device("cpu"), PostprocessConfig(), "fp32")
    assert not tiny_net.training


@pytest.mark.parametrize(
    "kwargs",
    [
        {"minutes": None, "steps": None},
        {"minutes": 0},
        {"steps": 0},
        {"patch_size": 8},
        {"batch_size": 0},
        {"select_by": "f1"},
        {"anchor": -1.0},
        {"anchor": 1000.0, "learning_rate": 2e-3},  # more than all the way back each step
    ],
)
def test_train_config_validation(kwargs):
    with pytest.raises(ValueError):
        TrainConfig(**kwargs)


def test_train_config_dict_round_trip():
    cfg = TrainConfig(patch_size=64, steps=10, minutes=None, augment=AugmentConfig(zoom=(0.9, 1.1)))
    d = cfg.to_dict()
    assert isinstance(d["augment"], dict)
    assert TrainConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match="unknown training keys"):
        TrainConfig.from_dict({"epochs": 3})


def test_training_dtype_on_cpu(monkeypatch):
    cpu = torch.device("cpu")
    assert training_dtype(cpu, "fp32") is None
    assert training_dtype(cpu, "bf16") is torch.bfloat16
    # auto: bf16 only where the CPU computes it in hardware; emulated bf16 trains 2.5x slower than fp32
    monkeypatch.setattr(train_mod, "cpu_bf16_native", lambda: False)
    assert training_dtype(cpu, "auto") is None
    monkeypatch.setattr(train_mod, "cpu_bf16_native", lambda: True)
    assert training_dtype(cpu, "auto") is torch.bfloat16


def test_train_event_defaults():
    e = TrainEvent("step", 3, 0.5, 1.0, 1.0, loss=0.2)
    assert e.val is None and not e.is_best and e.message == ""


def test_closing_the_generator_leaves_the_weights_unchanged(tiny_net, sample):
    start = _state(tiny_net)
    gen = iter_train(tiny_net, [sample], [], _config(steps=100))
    for e in gen:
        if e.kind == "step" and e.step == 3:
            break
    gen.close()
    assert _same(start, _state(tiny_net))


def test_an_error_during_validation_leaves_the_weights_unchanged(tiny_net, sample, val_sample, monkeypatch):
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("postprocessing failed")
        return {"ap50": 0.0, "loss": 1.0}

    monkeypatch.setattr(train_mod, "validate", failing)
    start = _state(tiny_net)
    with pytest.raises(RuntimeError, match="postprocessing failed"):
        _drain(iter_train(tiny_net, [sample], [val_sample], _config(steps=3)))
    assert _same(start, _state(tiny_net))


def test_best_state_on_val_events_is_the_trained_copy(tiny_net, sample, val_sample, monkeypatch):
    """Checkpoints written during a run must hold the new best weights, not the starting ones."""
    _scripted_validate(monkeypatch, [0.1, 0.2, 0.3])
    start = _state(tiny_net)
    events, _ = _drain(iter_train(tiny_net, [sample], [val_sample], _config(steps=2, val_every_s=0.0)))
    bests = [e for e in events if e.kind == "val" and e.is_best]
    assert bests and all(e.best_state is not None for e in bests)
    last = {k: v.clone() for k, v in bests[-1].best_state.items()}
    assert not _same(start, last)
    assert _same(_state(tiny_net), last)


def test_validation_stripe_lies_in_the_reviewed_area():
    from napari_unet_loop.core.sampling import Sample, split_validation

    labels = np.zeros((200, 300), np.int32)
    ignore = np.ones((200, 300), bool)
    for k, x in enumerate((20, 240), 1):  # two reviewed patches far apart, each with objects
        ignore[60:140, x : x + 50] = False
        labels[80:100, x + 10 : x + 30] = k
        labels[110:130, x + 10 : x + 30] = k + 10
    sample = Sample(np.zeros((1, 200, 300), np.float32), labels, ignore)
    for seed in range(20):
        train, val = split_validation([sample], 0.15, seed=seed)
        if not val:
            continue
        v = val[0]
        reviewed = ~v.ignore
        assert reviewed.mean() >= 0.25 and (v.labels[reviewed] > 0).any()


def test_no_validation_where_nothing_reviewed_fits():
    from napari_unet_loop.core.sampling import Sample, split_validation

    labels = np.zeros((100, 100), np.int32)  # reviewed, but no object anywhere
    train, val = split_validation([Sample(np.zeros((1, 100, 100), np.float32), labels)], 0.15)
    assert val == [] and train[0].ignore is None


@pytest.mark.parametrize(("anchor", "precision"), [(0.0, "fp32"), (20.0, "fp32"), (0.0, "fp16")])
def test_resume_from_a_checkpoint_continues_the_run_exactly(
    tiny_net, sample, val_sample, tmp_path, anchor, precision, monkeypatch
):
    """A run cut after step 3 and resumed from its checkpoint ends where an uncut run ends (the anchor's
    starting weights come from the checkpoint: the resumed network starts from random ones; in fp16 the loss
    scale it had reached, which began again at 65536 and skipped other steps)."""
    config = _config(steps=6, val_every_s=0.0, augment=AugmentConfig(blur=1.0), anchor=anchor, precision=precision)
    if anchor:  # a start the validation trusts (so the anchor pulls), scores that follow the weights

        def validate(net, *args, **kwargs):
            return {"ap50": 0.5, "loss": float(sum(p.abs().sum() for p in net.parameters()))}

        monkeypatch.setattr(train_mod, "validate", validate)
    whole = UNet(tiny_net.config)
    whole.load_state_dict(tiny_net.state_dict())
    events, uncut = _drain(iter_train(whole, [sample], [val_sample], config, checkpoint_every_s=0.0))
    ckpts = [e for e in events if e.kind == "checkpoint"]
    assert [e.step for e in ckpts] == [1, 2, 3, 4, 5]  # none after the last step: the run is over

    path = tmp_path / "run.ckpt"
    checkpoint_mod.save_checkpoint(ckpts[2].checkpoint, path, {"note": "x"})
    state, extra = checkpoint_mod.load_checkpoint(path)
    assert extra == {"note": "x"} and state["step"] == 3
    assert [h["step"] for h in state["history"] if "val" in h] == [0, 1, 2, 3]
    if precision == "fp16":  # the scale halves at each overflow: an uncut run's is below the start by now
        assert 0 < state["scaler"]["scale"] < 65536.0

    cut = UNet(tiny_net.config)  # weights come from the checkpoint
    events2, resumed = _drain(iter_train(cut, [sample], [val_sample], config, resume=state))
    assert events2[0].kind == "start" and "resumed at step 3" in events2[0].message
    assert resumed.anchor == uncut.anchor == anchor * 0.5
    steps = [e.step for e in events2 if e.kind == "step"]
    assert steps == [4, 5, 6]  # the step count carries on
    assert resumed.steps == uncut.steps == 6 and resumed.patches == uncut.patches
    assert resumed.baseline == uncut.baseline  # the starting scores are those of the first run
    for k, v in whole.state_dict().items():
        torch.testing.assert_close(cut.state_dict()[k], v)  # same random draws and learning rates
    assert [round(h["loss"], 5) for h in resumed.history if "loss" in h] == [
        round(h["loss"], 5) for h in uncut.history if "loss" in h
    ]


def test_resume_refuses_other_settings_and_other_files(tiny_net, sample, tmp_path):
    events, _ = _drain(iter_train(tiny_net, [sample], [], _config(steps=3), checkpoint_every_s=0.0))
    state = next(e.checkpoint for e in events if e.kind == "checkpoint")
    with pytest.raises(TrainingError, match="other training settings.*learning_rate"):
        _drain(iter_train(tiny_net, [sample], [], _config(steps=3, learning_rate=0.5), resume=state))
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="is not a training checkpoint"):
        checkpoint_mod.load_checkpoint(bad)
    with pytest.raises(TrainingError, match="cannot read the training checkpoint .*No such file"):
        checkpoint_mod.load_checkpoint(tmp_path / "gone.ckpt")
    checkpoint_mod.save_checkpoint(state, bad)
    checkpoint_mod.load_checkpoint(bad)  # whole: it reads
    payload = torch.load(bad, weights_only=True)
    del payload["optimizer"]  # what a resumed run reads: missing, it is named before any step
    torch.save(payload, bad)
    with pytest.raises(TrainingError, match="damaged training checkpoint: it lacks optimizer"):
        checkpoint_mod.load_checkpoint(bad)
    torch.save({**payload, "json": 5}, bad)
    with pytest.raises(TrainingError, match="damaged training checkpoint: its settings cannot be read"):
        checkpoint_mod.load_checkpoint(bad)


def test_resume_of_a_checkpoint_made_before_a_setting_existed(tiny_net, sample):
    """A setting added later (here the anchor) had its default then: the old checkpoint still resumes."""
    events, _ = _drain(iter_train(tiny_net, [sample], [], _config(steps=3), checkpoint_every_s=0.0))
    state = next(e.checkpoint for e in events if e.kind == "checkpoint")
    del state["config"]["anchor"], state["anchor"]
    _, result = _drain(iter_train(tiny_net, [sample], [], _config(steps=3), resume=state))
    assert result.steps == 3
    with pytest.raises(TrainingError, match="other training settings.*anchor"):
        _drain(iter_train(tiny_net, [sample], [], _config(steps=3, anchor=5.0), resume=state))


def test_anchor_pulls_toward_the_start_as_far_as_the_start_is_trusted(tiny_net, sample, val_sample, monkeypatch):
    """Each step pulls the trained weights back toward the start, by anchor x the start's validation AP@0.5."""
    start = _state(tiny_net)

    def strayed(anchor, baseline_ap50):
        _scripted_validate(monkeypatch, [baseline_ap50, 2.0])  # the start, then the end (better: kept)
        net = UNet(tiny_net.config)
        net.load_state_dict(start)
        config = _config(steps=8, freeze_norm=True, anchor=anchor)
        events, result = _drain(iter_train(net, [sample], [val_sample], config))
        end = _state(net)
        distance = sum(float((end[k] - start[k]).norm()) for k in start if end[k].is_floating_point())
        return distance, result.anchor, events[0].message

    free, no_pull, _ = strayed(0.0, 1.0)
    held, pull, message = strayed(80.0, 1.0)  # 80 x 1e-2 x 1.0: 80 % of the way back after each step
    half, half_pull, _ = strayed(80.0, 0.5)
    untrusted, zero, plain = strayed(80.0, 0.0)  # the start gets nothing right: no pull at all
    assert (no_pull, pull, half_pull, zero) == (0.0, 80.0, 40.0, 0.0)
    assert 0 < held < half < 0.6 * free
    assert untrusted == pytest.approx(free, rel=1e-6)  # the same run as without an anchor
    assert "held near the starting weights (anchor 80)" in message and "held near" not in plain


def test_balance_kinds_gives_rare_kinds_their_share(discs, disc_img):
    labels = discs((64, 64), 4, seed=3)
    img = disc_img(labels, seed=3)
    samples = [Sample(img, labels, kind="fluorescence") for _ in range(8)] + [Sample(img, labels, kind="he")]
    shares = balance_kinds(samples, {"he": 0.3})
    assert shares["he"] == pytest.approx(0.3 / 1.3 * 1.0 / (1 / 1.3), rel=0.2)  # about 0.3 after normalising
    sampler = PatchSampler(samples, _config(), torch.device("cpu"))
    p_he = sampler.p[-1]
    assert p_he == pytest.approx(shares["he"], rel=1e-6)  # the sampler draws he patches that often
    assert sum(sampler.p[:-1]) == pytest.approx(shares["fluorescence"], rel=1e-6)


def test_the_validation_stripe_never_takes_the_only_example_of_a_size():
    """One large object among small ones: the stripe goes where the large one stays in training."""
    from napari_unet_loop.core.sampling import Sample, split_validation

    labels = np.zeros((200, 100), np.int32)
    k = 1
    for y in range(10, 200, 25):  # small objects down the whole image
        labels[y : y + 8, 5:13] = k
        k += 1
    labels[60:100, 40:90] = k  # the one large object
    for seed in range(8):
        train, val = split_validation([Sample(np.zeros((1, 200, 100), np.float32), labels)], 0.2, seed=seed)
        assert len(val) == 1
        assert (val[0].labels == k).sum() * 2 <= (labels == k).sum(), seed  # the large one mostly trains
        assert (train[0].labels == k)[~train[0].ignore].any()
    # a single object: it is never mostly held out (a stripe may cut its edge, or the sample trains whole)
    one = np.zeros((200, 100), np.int32)
    one[80:120, 30:70] = 1
    for seed in range(8):
        train, val = split_validation([Sample(np.zeros((1, 200, 100), np.float32), one)], 0.2, seed=seed)
        assert not val or (val[0].labels == 1).sum() * 2 <= (one == 1).sum()
