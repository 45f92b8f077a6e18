"""The plane loop: Z stacks normalised alike, blank planes, errors that name their plane."""

import numpy as np
import pytest

from napari_unet_loop.core import planes as planes_mod
from napari_unet_loop.core.axes import z_stack_of
from napari_unet_loop.core.image import intensity_limits
from napari_unet_loop.core.planes import PlaneDone, PlaneError, SegmentSettings, iter_segment_planes, stack_settings
from napari_unet_loop.core.predict import run


def _noisy_stack(discs, seed: int = 0) -> np.ndarray:
    """Four planes: discs in planes 1 and 2, white noise only in planes 0 and 3."""
    rng = np.random.default_rng(seed)
    stack = rng.normal(20, 5, (4, 64, 64)).astype(np.float32)
    for z in (1, 2):
        stack[z][discs((64, 64), 4, seed=z) > 0] += 100
    return stack


def test_stack_settings_normalise_every_plane_of_a_stack_alike(model, discs):

    stack = _noisy_stack(discs)
    indices = [(z,) for z in range(4)]
    got = stack_settings(model, lambda i: stack[i[0]], indices, SegmentSettings(modality="auto"))
    assert got.modality == "fluorescence"  # "auto" resolved once, for the whole stack
    ((lo, hi),) = got.limits
    assert (lo, hi) == pytest.approx(intensity_limits(stack, model.card.normalization), rel=1e-6)
    noise_only = intensity_limits(stack[0], model.card.normalization)
    assert hi > noise_only[1] + 50  # a plane of noise is no longer stretched to the full range
    # one plane, or settings already fixed: nothing to do
    assert stack_settings(model, lambda i: stack[i[0]], [(0,)], SegmentSettings()) == SegmentSettings()
    fixed = SegmentSettings(limits=((0.0, 1.0),))
    assert stack_settings(model, lambda i: stack[i[0]], indices, fixed) is fixed
    # a stack constant throughout: its planes stay blank, one by one
    flat = np.full((3, 32, 32), 7.0, np.float32)
    assert stack_settings(model, lambda i: flat[i[0]], [(z,) for z in range(3)], SegmentSettings()).limits is None


def test_stack_settings_read_at_most_stack_planes_spread_over_the_stack(model, monkeypatch):

    monkeypatch.setattr(planes_mod, "STACK_PLANES", 5)
    read = []
    stack = np.random.default_rng(0).normal(size=(41, 16, 16)).astype(np.float32)
    stack_settings(model, lambda i: read.append(i[0]) or stack[i[0]], [(z,) for z in range(41)], SegmentSettings())
    assert read == [0, 10, 20, 30, 40]


def test_planes_of_a_z_stack_segment_alike_alone_or_together(model, discs):

    stack = _noisy_stack(discs)
    stack[3] = 5.0  # a blank plane at the end stays blank
    read = lambda i: stack[i[0]]  # noqa: E731
    indices = [(z,) for z in range(4)]
    stack_of = z_stack_of((4,), 0)

    def planes(idx, of):
        out = {}
        summary = run(
            iter_segment_planes(model, read, idx, SegmentSettings(), of),
            lambda item: out.update({item.index: item}) if isinstance(item, PlaneDone) else None,
        )
        return out, summary

    together, summary = planes(indices, stack_of)
    assert summary.blank == [(3,)]
    alone, _ = planes([(1,)], stack_of)  # one plane of the stack, segmented on its own
    np.testing.assert_array_equal(alone[(1,)].labels, together[(1,)].labels)
    np.testing.assert_array_equal(alone[(1,)].result.probs, together[(1,)].result.probs)
    # each plane by its own percentiles, as before, when the planes are not a Z stack
    apart, _ = planes([(0,)], None)
    assert not np.array_equal(apart[(0,)].result.probs, together[(0,)].result.probs)


def test_a_plane_of_nan_in_a_stack_stops_the_run_with_its_position(model, discs, monkeypatch):

    stack = _noisy_stack(discs)
    stack[2, 4, 4] = np.nan  # in the pixels the stack's normalisation reads
    with pytest.raises(PlaneError, match=r"plane \(2,\): it holds NaN") as caught:
        run(iter_segment_planes(model, lambda i: stack[i[0]], [(0,), (1,)], SegmentSettings(), z_stack_of((4,), 0)))
    assert caught.value.index == (2,)  # the plane at fault, not the one being segmented

    monkeypatch.setattr(planes_mod, "STACK_PIXELS", 4 * 32 * 32)  # every other row and column of each plane is read
    stack[2, 4, 4], stack[1, 5, 5] = 0.0, np.nan  # in a pixel it does not read: found when plane 1 is segmented
    done = []
    with pytest.raises(PlaneError, match=r"plane \(1,\).*NaN"):
        run(
            iter_segment_planes(model, lambda i: stack[i[0]], [(0,), (1,)], SegmentSettings(), z_stack_of((4,), 0)),
            lambda item: done.append(item.index) if isinstance(item, PlaneDone) else None,
        )
    assert done == [(0,)]


@pytest.mark.parametrize("kind", ["rgb", "channel"])
def test_a_plane_blank_in_what_is_read_stays_blank_in_a_normalised_stack(model, discs, kind):
    """Blank is judged on what the network reads: the chosen channel, or an RGB plane of one colour."""

    grey = _noisy_stack(discs)[:3]
    if kind == "rgb":
        stack = np.repeat(grey[..., None], 3, axis=-1).clip(0, 255).astype(np.uint8)
        stack[1] = (200, 30, 90)  # one flat colour
        settings = SegmentSettings(rgb=True)
    else:
        stack = np.stack([grey, np.random.default_rng(1).normal(size=grey.shape)], axis=-1).astype(np.float32)
        stack[1, ..., 0] = 3.0  # the chosen channel is blank, the other is not
        settings = SegmentSettings(channel=0)
    summary = run(iter_segment_planes(model, lambda i: stack[i[0]], [(0,), (1,), (2,)], settings, z_stack_of((3,), 0)))
    assert summary.blank == [(1,)]
