import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_unet_loop.core.augment import (
    NO_AUGMENT,
    AugmentConfig,
    device_generator,
    jitter_intensity,
    mix_stains,
    sampling_grid,
    warp,
)

PLAIN = AugmentConfig(flip=False, rotate=False, zoom=(1.0, 1.0), elastic_sigma=0.0, intensity=0.5)


def _blobs(n, size, seed=0):
    """Class maps (0, 1, 2) of random rectangles and their images."""
    rng = np.random.default_rng(seed)
    cls = np.zeros((n, size, size), np.int64)
    for i in range(n):
        for _ in range(6):
            y, x = rng.integers(0, size - 8, size=2)
            h, w = rng.integers(6, 16, size=2)
            cls[i, y : y + h, x : x + w] = rng.integers(1, 3)
    return torch.from_numpy(cls)


@pytest.mark.parametrize("config", [NO_AUGMENT, PLAIN])
def test_no_augmentation_is_the_identity(config):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 2, 32, 32, generator=g)
    classes = _blobs(3, 32)
    cont = torch.rand(3, 2, 32, 32, generator=g)
    grid = sampling_grid(3, 32, 32, config, torch.Generator().manual_seed(1))
    assert grid.shape == (3, 32, 32, 2)
    out_img, out_cont, out_cls = warp(grid, image, cont, classes)
    torch.testing.assert_close(out_img, image, atol=1e-5, rtol=0)
    torch.testing.assert_close(out_cont, cont, atol=1e-5, rtol=0)
    assert out_cls.dtype == torch.int64
    assert torch.equal(out_cls, classes)


def test_larger_source_without_augmentation_is_a_centre_crop():
    image = torch.rand(1, 1, 40, 40)
    grid = sampling_grid(1, 32, 40, NO_AUGMENT)
    out, cont, cls = warp(grid, image)
    assert cont is None and cls is None
    torch.testing.assert_close(out, image[:, :, 4:36, 4:36], atol=1e-5, rtol=0)


def _dihedral(x):
    """The 8 flips and 90-degree rotations of a (..., H, W) tensor."""
    out = []
    for k in range(4):
        r = torch.rot90(x, k, dims=(-2, -1))
        out += [r, torch.flip(r, dims=(-1,))]
    return out


def test_flips_and_right_angle_rotations_are_exact():
    config = AugmentConfig(flip=True, rotate=False, zoom=(1.0, 1.0), elastic_sigma=0.0, intensity=0.0)
    n = 24
    image = torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    classes = _blobs(n, 16)
    grid = sampling_grid(n, 16, 16, config, torch.Generator().manual_seed(2))
    out, _, cls = warp(grid, image, None, classes)
    kinds = set()
    for i in range(n):
        candidates = _dihedral(image[i])
        errs = [float((out[i] - c).abs().max()) for c in candidates]
        k = int(np.argmin(errs))
        assert errs[k] < 1e-4
        assert torch.equal(cls[i], _dihedral(classes[i])[k])
        kinds.add(k)
    assert len(kinds) >= 4  # the draws really vary


def test_geometric_augmentation_keeps_image_and_classes_aligned():
    config = AugmentConfig(flip=True, rotate=True, zoom=(0.75, 1.33), elastic_sigma=10.0)
    n, src, out_size = 6, 96, 64
    classes = _blobs(n, src, seed=3)
    image = classes[:, None].float()
    cont = (classes[:, None] > 0).float()
    grid = sampling_grid(n, out_size, src, config, torch.Generator().manual_seed(4))
    out_img, out_cont, out_cls = warp(grid, image, cont, classes)
    assert out_img.shape == (n, 1, out_size, out_size)
    assert out_cls.shape == (n, out_size, out_size)
    agree = (out_img[:, 0].round().long() == out_cls).float().mean()
    assert agree > 0.97
    agree_cont = ((out_cont[:, 0] > 0.5) == (out_cls > 0)).float().mean()
    assert agree_cont > 0.97
    # and the patches really were transformed
    centre = classes[:, 16:80, 16:80]
    assert (out_cls != centre).float().mean() > 0.05


def test_zoom_above_one_samples_a_smaller_area():
    config = AugmentConfig(flip=False, rotate=False, zoom=(2.0, 2.0), elastic_sigma=0.0)
    grid = sampling_grid(1, 32, 32, config)
    span = grid[0, :, :, 0].max() - grid[0, :, :, 0].min()
    assert span == pytest.approx(31 / 32, abs=1e-5)  # half of the full (62 / 32) span


def test_elastic_deformation_moves_pixels_by_about_sigma():
    sigma, src = 10.0, 128
    elastic = AugmentConfig(flip=False, rotate=False, zoom=(1.0, 1.0), elastic_sigma=sigma)
    grid = sampling_grid(64, 64, src, elastic, torch.Generator().manual_seed(0))
    plain = sampling_grid(64, 64, src, NO_AUGMENT)
    shift_px = (grid - plain) * src / 2
    std = float(shift_px.std())
    assert 0.4 * sigma < std < 1.5 * sigma
    # the field is smooth: neighbouring pixels move almost alike
    assert float((shift_px[:, 1:] - shift_px[:, :-1]).abs().max()) < sigma / 2


def test_elastic_field_is_bicubic_upsampling_of_the_coarse_draws():
    """The field is built axis by axis; it must equal 2-D bicubic upsampling of the same draws."""
    sigma, k, out, src = 10.0, 3, 48, 64
    elastic = AugmentConfig(flip=False, rotate=False, zoom=(1.0, 1.0), elastic_sigma=sigma, elastic_grid=k)
    grid = sampling_grid(5, out, src, elastic, torch.Generator().manual_seed(3))
    plain = sampling_grid(5, out, src, NO_AUGMENT)
    g = torch.Generator().manual_seed(3)
    torch.rand(5, generator=g)  # the zoom's draw comes first
    coarse = torch.randn(5, 2, k, k, generator=g) * (sigma * 2 / src)
    expected = F.interpolate(coarse, size=(out, out), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    assert torch.allclose(grid - plain, expected, atol=1e-5)


def test_draws_are_reproducible_with_a_generator():
    config = AugmentConfig()
    a = sampling_grid(4, 32, 64, config, torch.Generator().manual_seed(7))
    b = sampling_grid(4, 32, 64, config, torch.Generator().manual_seed(7))
    c = sampling_grid(4, 32, 64, config, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_jitter_intensity():
    image = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(jitter_intensity(image, 0.0), image)
    a = jitter_intensity(image, 0.8, torch.Generator().manual_seed(1))
    b = jitter_intensity(image, 0.8, torch.Generator().manual_seed(1))
    assert a.shape == image.shape
    assert torch.equal(a, b)
    assert not torch.allclose(a, image, atol=1e-3)
    # intensity changes stay moderate and keep the image's structure
    for i in range(4):
        r = np.corrcoef(a[i].ravel().numpy(), image[i].ravel().numpy())[0, 1]
        assert r > 0.8


def test_device_noise_follows_the_run_seed():
    """Noise drawn on a GPU comes from a generator seeded by the run's CPU generator, not the device's global one."""

    def draws(seed):
        g = device_generator(torch.Generator().manual_seed(seed), torch.device("cpu"))
        return torch.randn(8, generator=g)

    assert torch.equal(draws(3), draws(3))
    assert not torch.equal(draws(3), draws(4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_jitter_on_cuda_is_reproducible():
    image = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0)).cuda()
    a = jitter_intensity(image, 0.8, torch.Generator().manual_seed(1))
    torch.randn(100, device="cuda")  # other use of the global generator between the runs
    b = jitter_intensity(image, 0.8, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_stain_mix_changes_the_hue_of_colour_patches_only():
    gen = torch.Generator().manual_seed(0)
    colour = torch.rand(6, 3, 16, 16, generator=gen)
    # strength 0 and grey patches: unchanged, and the very same tensor
    assert mix_stains(colour, 0.0) is colour
    grey = torch.rand(6, 1, 16, 16, generator=gen)
    assert mix_stains(grey, 1.0, gen) is grey
    a = mix_stains(colour, 1.0, torch.Generator().manual_seed(1))
    b = mix_stains(colour, 1.0, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert a.shape == colour.shape
    # each patch gets its own mix, and it changes the colours
    assert not torch.allclose(a, colour, atol=1e-2)
    change = (a - colour).abs().mean(dim=(1, 2, 3))
    assert change.min() > 0 and change.std() > 0
    # white background and neutral greys (equal channels) keep their value: only hues change
    neutral = torch.rand(6, 1, 16, 16, generator=gen).expand(6, 3, 16, 16).clone()
    neutral[..., :4, :] = 1.0
    assert torch.allclose(mix_stains(neutral, 1.0, gen), neutral, atol=1e-6)
    # a moderate change: each channel keeps most of its own structure
    for i in range(6):
        for c in range(3):
            r = np.corrcoef(a[i, c].ravel().numpy(), colour[i, c].ravel().numpy())[0, 1]
            assert r > 0.6
    # the strength scales the change
    weak = mix_stains(colour, 0.2, torch.Generator().manual_seed(1))
    assert (weak - colour).abs().mean() < (a - colour).abs().mean() / 3


def test_config_dict_round_trip():
    cfg = AugmentConfig(flip=False, zoom=(0.9, 1.1), elastic_sigma=3.0)
    d = cfg.to_dict()
    d["zoom"] = list(d["zoom"])  # as read back from JSON
    assert AugmentConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match="unknown augmentation keys"):
        AugmentConfig.from_dict({"shear": 0.1})
