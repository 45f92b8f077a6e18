import numpy as np
import pytest
import torch
from torch import nn

from napari_unet_loop.core import predict as predict_mod
from napari_unet_loop.core.predict import (
    TILE_CHOICES,
    Progress,
    auto_tile_size,
    iter_predict,
    model_halo,
    outputs_to_probabilities,
    predict,
    run,
)
from napari_unet_loop.core.unet import UNet, UNetConfig


@pytest.fixture(scope="module")
def default_net():
    """The default architecture, randomly initialised, with non-trivial batch-norm statistics.

    The head is rescaled so that the class logits vary by a few units over an image:
    probabilities then spread over (0, 1) and a seam would show.
    """
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    net = UNet(UNetConfig())
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in bns:
            m.momentum = None  # cumulative averages: the running stats become the data's
            m.weight.uniform_(0.5, 1.5, generator=g)
            m.bias.uniform_(-0.2, 0.2, generator=g)
        net.train()
        for _ in range(3):
            net(torch.rand(2, 1, 64, 64, generator=g) * 2 + 0.5)
        net.eval()
        assert all(m.num_batches_tracked.item() == 3 for m in bns)
        assert any(m.running_mean.abs().max() > 0.1 for m in bns)
        std = net(torch.rand(1, 1, 128, 128, generator=g)).std(dim=(0, 2, 3))
        net.head.weight.mul_(2.0 / std[:, None, None, None])
        net.head.bias.zero_()
    return net


def _structured_image(shape, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[-2], : shape[-1]]
    img = np.sin(yy / 7.0) * np.cos(xx / 11.0) + 0.3 * rng.standard_normal((shape[-2], shape[-1]))
    return img.astype(np.float32).reshape(shape)


@pytest.mark.parametrize("shape", [(203, 317), (97, 401), (1, 131, 157)])
def test_tiled_output_equals_whole_image_output(default_net, shape):
    image = _structured_image(shape)
    h, w = shape[-2:]
    whole = predict(default_net, image, tile=2048, precision="fp32")
    assert whole.shape == (4, h, w)
    assert whole[:3].std() > 0.1  # the outputs really vary over the image
    tiles = [t for t in TILE_CHOICES if t < max(h, w)] + [None]
    assert 128 in tiles
    for tile in tiles:
        tiled = predict(default_net, image, tile=tile, precision="fp32")
        diff = float(np.abs(tiled - whole).max())
        assert diff < 1e-3, f"tile={tile}: max abs difference {diff}"


def test_tiled_comparison_detects_a_too_small_halo(default_net, monkeypatch):
    """Control for the test above: with a halo below rf / 2, seams appear."""
    image = _structured_image((203, 317))
    whole = predict(default_net, image, tile=2048, precision="fp32")
    monkeypatch.setattr(predict_mod, "model_halo", lambda net: 32)
    tiled = predict(default_net, image, tile=128, precision="fp32")
    assert np.abs(tiled - whole).max() > 1e-2


def test_model_halo_of_default_architecture(default_net):
    assert model_halo(default_net) == 112


def test_outputs_are_probabilities_and_distances(tiny_net):
    image = _structured_image((40, 50))
    out = predict(tiny_net, image, tile=32, precision="fp32")
    assert out.shape == (4, 40, 50) and out.dtype == np.float32
    np.testing.assert_allclose(out[:3].sum(0), 1.0, atol=1e-5)
    assert out.min() >= 0 and out.max() <= 1
    assert np.isfinite(out).all()


def test_outputs_to_probabilities():
    logits = torch.randn(2, 4, 5, 6)
    p = outputs_to_probabilities(logits, 3)
    torch.testing.assert_close(p[:, :3], torch.softmax(logits[:, :3], 1))
    torch.testing.assert_close(p[:, 3], torch.sigmoid(logits[:, 3]))
    only_classes = outputs_to_probabilities(logits[:, :3], 3)
    assert only_classes.shape == (2, 3, 5, 6)


def test_batch_size_and_out_dtype_do_not_change_the_result(tiny_net):
    image = _structured_image((70, 90))
    ref = predict(tiny_net, image, tile=16, batch_size=1, precision="fp32")
    batched = predict(tiny_net, image, tile=16, batch_size=7, precision="fp32")
    np.testing.assert_allclose(batched, ref, atol=1e-5)
    half = predict(tiny_net, image, tile=16, precision="fp32", out_dtype=np.float16)
    assert half.dtype == np.float16
    np.testing.assert_allclose(half.astype(np.float32), ref, atol=2e-3)


def test_tile_is_rounded_up_to_the_size_multiple(tiny_net):
    image = _structured_image((50, 50))
    # tile 13 -> 16 (depth 2 needs multiples of 4): 4 x 4 tiles of 16
    progress = []
    run(iter_predict(tiny_net, image, tile=13, batch_size=1, precision="fp32"), progress.append)
    assert progress[-1] == Progress(16, 16)


def test_progress_is_reported_per_batch(tiny_net):
    image = _structured_image((50, 70))  # tile 16: 4 x 5 = 20 tiles
    gen = iter_predict(tiny_net, image, tile=16, batch_size=6, precision="fp32")
    seen = []
    out = run(gen, seen.append)
    assert [p.done for p in seen] == [0, 6, 12, 18, 20]
    assert all(p.total == 20 and p.stage == "predict" for p in seen)
    assert out.shape == (4, 50, 70)


def test_channel_mismatch_is_an_error(tiny_net):
    with pytest.raises(ValueError, match="expects 1 input channel"):
        predict(tiny_net, np.zeros((2, 32, 32), np.float32), precision="fp32")


def test_multichannel_input():
    torch.manual_seed(0)
    net = UNet(UNetConfig(in_channels=2, depth=2, base_width=4))
    image = np.stack([_structured_image((33, 45), s) for s in (0, 1)])
    out = predict(net, image, tile=16, precision="fp32")
    whole = predict(net, image, tile=64, precision="fp32")
    assert out.shape == (4, 33, 45)
    np.testing.assert_allclose(out, whole, atol=1e-4)


def test_predict_puts_the_network_in_eval_mode(tiny_net):
    tiny_net.train()
    predict(tiny_net, _structured_image((32, 32)), tile=32, precision="fp32")
    assert not tiny_net.training


def test_auto_tile_size_on_cpu(tiny_net):
    cpu = torch.device("cpu")
    small_core, small_batch = auto_tile_size(tiny_net, cpu, "fp32", memory=1 << 20)
    assert small_core == TILE_CHOICES[0] and small_batch == 1
    big_core, big_batch = auto_tile_size(tiny_net, cpu, "fp32", memory=1 << 40)
    assert big_core == 1024 and big_batch == 1  # capped on the CPU
    cores = [auto_tile_size(tiny_net, cpu, "fp32", memory=m)[0] for m in (1 << 26, 1 << 28, 1 << 30)]
    assert cores == sorted(cores)
    assert all(c in TILE_CHOICES for c in cores)


def test_auto_tile_size_on_a_gpu_uses_larger_tiles_and_batches(default_net):
    gpu = torch.device("cuda")  # only geometry: nothing runs on the device
    core, batch = auto_tile_size(default_net, gpu, "fp32", memory=80 << 30)
    assert core == 2048
    assert batch >= 1
    core_small, batch_small = auto_tile_size(default_net, gpu, "fp32", memory=2 << 30)
    assert core_small < core
    halo = model_halo(default_net)
    per_px = predict_mod.bytes_per_pixel(default_net, None)
    # the chosen tiles fit in half the memory
    assert (core_small + 2 * halo) ** 2 * per_px * batch_small <= (2 << 30) // 2


def test_tta_tiled_equals_whole_and_differs_from_plain():
    import torch

    from napari_unet_loop.core.predict import predict
    from napari_unet_loop.core.unet import UNet, UNetConfig

    torch.manual_seed(0)
    net = UNet(UNetConfig(depth=2, base_width=4))
    net.train()
    with torch.no_grad():
        net(torch.randn(4, 1, 32, 32))
    net.eval()
    img = np.random.default_rng(0).random((45, 70)).astype(np.float32)
    whole = predict(net, img, tile=256, tta=True, precision="fp32")
    tiled = predict(net, img, tile=16, tta=True, precision="fp32")
    assert np.abs(whole - tiled).max() < 1e-4
    plain = predict(net, img, tile=256, precision="fp32")
    assert np.abs(whole - plain).max() > 1e-4
    # the flips undo exactly: a flipped image gives the flipped result
    flipped = predict(net, img[::-1].copy(), tile=256, tta=True, precision="fp32")
    assert np.abs(flipped[:, ::-1] - whole).max() < 1e-4


def test_out_of_memory_retries_smaller_with_the_same_result(monkeypatch):
    import torch

    from napari_unet_loop.core import predict as predict_mod
    from napari_unet_loop.core.unet import UNet, UNetConfig

    torch.manual_seed(0)
    net = UNet(UNetConfig(depth=2, base_width=4)).eval()
    img = np.random.default_rng(1).random((70, 90)).astype(np.float32)
    expected = predict_mod.predict(net, img, tile=64, batch_size=4, precision="fp32")
    real = predict_mod._forward
    seen = []

    def tight_memory(net, x, *args):
        seen.append(tuple(x.shape))
        if x.shape[0] * x.shape[-1] * x.shape[-2] > 20_000:  # only one tile at a time fits
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(net, x, *args)

    monkeypatch.setattr(predict_mod, "_forward", tight_memory)
    got = predict_mod.predict(net, img, tile=64, batch_size=4, precision="fp32")
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert seen[0][0] == 4 and seen[-1][0] == 1  # it went down to one tile per batch


def test_out_of_memory_at_the_smallest_tile_is_a_clear_error(monkeypatch):
    import torch

    from napari_unet_loop.core import predict as predict_mod
    from napari_unet_loop.core.unet import UNet, UNetConfig

    def no_memory(*args):
        raise torch.OutOfMemoryError("simulated")

    monkeypatch.setattr(predict_mod, "_forward", no_memory)
    net = UNet(UNetConfig(depth=2, base_width=4)).eval()
    with pytest.raises(MemoryError, match="out of memory"):
        predict_mod.predict(net, np.zeros((40, 40), np.float32), tile=64)


def test_no_inference_mode_leaks_out_of_a_suspended_prediction():
    """A cancelled worker abandons the generator at a yield: torch's thread-local modes must be off there."""
    import torch

    from napari_unet_loop.core.predict import iter_predict
    from napari_unet_loop.core.unet import UNet, UNetConfig

    net = UNet(UNetConfig(depth=2, base_width=4)).eval()
    gen = iter_predict(net, np.zeros((100, 100), np.float32), tile=32, batch_size=1)
    next(gen)
    next(gen)  # suspended after the first batch of tiles
    assert not torch.is_inference_mode_enabled()
    assert torch.is_grad_enabled()
    gen.close()
