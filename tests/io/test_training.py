"""Training samples from image/label files: 2D images as segment reads them, stacks plane by plane."""

import numpy as np
import pytest
import tifffile

from napari_unet_loop.core.image import intensity_limits, prepare_input
from napari_unet_loop.core.model_files import new_model
from napari_unet_loop.core.unet import UNetConfig
from napari_unet_loop.io.training import SampleFileError, training_reports, training_samples
from napari_unet_loop.sample_data import sample_path

TINY = UNetConfig(depth=2, base_width=4)


@pytest.fixture
def auto_model():
    return new_model(TINY, name="tiny", modality="auto")


def _stack(tmp_path, axes: str):
    """Three planes of one disc each, the first dim, the last bright; labels in planes 0 and 2 only."""
    yy, xx = np.mgrid[:48, :48]
    disc = (yy - 24) ** 2 + (xx - 24) ** 2 <= 64
    rng = np.random.default_rng(0)
    image = rng.normal(10, 2, (3, 48, 48)).astype(np.float32)
    for z, level in enumerate((30, 120, 250)):
        image[z][disc] += level
    labels = np.zeros((3, 48, 48), np.uint16)
    labels[0][disc], labels[2][disc] = 1, 1
    tifffile.imwrite(tmp_path / "img.tif", image, metadata={"axes": axes})
    tifffile.imwrite(tmp_path / "lab.tif", labels)
    return image, labels


def test_a_2d_image_is_read_as_segment_reads_it(auto_model):
    import imageio.v3 as iio

    path = sample_path("nuclei_he_stain")
    (sample,) = training_samples([(path, sample_path("nuclei_he_stain", labels=True))], auto_model)
    image = iio.imread(path)
    want = prepare_input(image, 1, auto_model.card.normalization, modality="he")
    assert sample.kind == "he" and sample.name == "nuclei_he_stain"
    np.testing.assert_array_equal(sample.image, want)
    np.testing.assert_array_equal(sample.labels, iio.imread(sample_path("nuclei_he_stain", labels=True)))
    # an Imaging choice: the kind the image reaches the network as (balancing, the weights a fine-tune starts from)
    pair = [(path, sample_path("nuclei_he_stain", labels=True))]
    (chosen,) = training_samples(pair, auto_model, "brightfield")
    assert chosen.kind == "brightfield"
    np.testing.assert_array_equal(
        chosen.image, prepare_input(image, 1, auto_model.card.normalization, modality="brightfield")
    )


def test_frames_in_doubt_are_read_as_the_model_reads_them(tmp_path, auto_model, phase_like):
    """Two frames on either side of the fluorescence/brightfield line reach the network alike."""
    import imageio.v3 as iio

    pairs = []
    for n, background in enumerate((0.30, 0.40)):
        image, labels = phase_like(background, seed=n)
        iio.imwrite(tmp_path / f"t{n}.png", image)
        iio.imwrite(tmp_path / f"l{n}.png", labels)
        pairs.append((tmp_path / f"t{n}.png", tmp_path / f"l{n}.png"))
    reports = training_reports(pairs, auto_model)
    assert [r.modality for r in reports] == ["fluorescence", "brightfield"] and all(r.in_doubt for r in reports)
    assert training_reports(pairs, auto_model, "brightfield") == []  # a chosen kind: nothing detected
    assert [s.kind for s in training_samples(pairs, auto_model)] == ["fluorescence", "brightfield"]
    auto_model.card.kind_in_doubt = "brightfield"
    samples = training_samples(pairs, auto_model)
    assert [s.kind for s in samples] == ["brightfield", "brightfield"]
    want = prepare_input(iio.imread(pairs[0][0]), 1, auto_model.card.normalization, modality="brightfield")
    np.testing.assert_array_equal(samples[0].image, want)


def test_a_z_stack_gives_its_annotated_planes_normalised_together(tmp_path, auto_model):
    image, labels = _stack(tmp_path, "ZYX")
    samples = training_samples([(tmp_path / "img.tif", tmp_path / "lab.tif")], auto_model)
    assert [s.name for s in samples] == ["img[0]", "img[2]"]  # plane 1 holds no object
    np.testing.assert_array_equal(samples[1].labels, labels[2])
    lo, hi = intensity_limits(image, auto_model.card.normalization)  # the stack's, as segment uses
    np.testing.assert_allclose(samples[0].image[0], (image[0] - lo) / (hi - lo), atol=1e-5)
    assert samples[0].image.max() < 0.5  # the dim plane stays dim, as the plane loop segments it


def test_time_points_are_normalised_apart(tmp_path, auto_model):
    _stack(tmp_path, "TYX")
    samples = training_samples([(tmp_path / "img.tif", tmp_path / "lab.tif")], auto_model)
    assert [s.name for s in samples] == ["img[0]", "img[2]"]
    assert samples[0].image.max() > 0.9  # each time point by its own percentiles


def test_bad_stacks_are_refused_with_the_file_name(tmp_path, auto_model):
    image, labels = _stack(tmp_path, "ZYX")
    tifffile.imwrite(tmp_path / "short.tif", labels[:2])
    with pytest.raises(SampleFileError, match=r"img\.tif: the labels have shape \(2, 48, 48\).*\(3, 48, 48\)"):
        training_samples([(tmp_path / "img.tif", tmp_path / "short.tif")], auto_model)
    tifffile.imwrite(tmp_path / "empty.tif", np.zeros_like(labels))
    with pytest.raises(SampleFileError, match="no plane of the 3 holds a labelled object"):
        training_samples([(tmp_path / "img.tif", tmp_path / "empty.tif")], auto_model)


def test_label_files_read_as_masks_are_said_once(tmp_path, auto_model):
    """Binary masks train as their separate pieces; the caller is told which files were read so."""
    from napari_unet_loop.io.training import mask_note

    yy, xx = np.mgrid[:64, :64]
    image = np.where(((yy - 20) ** 2 + (xx - 20) ** 2 <= 49) | ((yy - 44) ** 2 + (xx - 44) ** 2 <= 49), 200, 10)
    pairs = []
    for name, lab in (("ids", (image > 100) * (1 + (xx > 32))), ("mask1", image > 100), ("mask2", image > 100)):
        tifffile.imwrite(tmp_path / f"{name}.tif", image.astype(np.uint8))
        tifffile.imwrite(tmp_path / f"{name}_labels.tif", lab.astype(np.uint8))
        pairs.append((tmp_path / f"{name}.tif", tmp_path / f"{name}_labels.tif"))
    notes: list[str] = []
    samples = training_samples(pairs, auto_model, notes=notes)
    assert [s.labels.max() for s in samples] == [2, 2, 2]  # each disc one object, in the masks too
    assert len(notes) == 2 and notes[0].startswith("mask1_labels.tif is a mask")
    assert mask_note(notes[:1]).startswith("mask1_labels.tif is a mask (one id in separate pieces)")
    assert mask_note(notes).startswith("2 label files are masks (one id in separate pieces; the first: mask1_labels")
    assert mask_note([]) is None
    assert len(training_samples(pairs[:1], auto_model, notes=notes)) == 1 and len(notes) == 2  # ids: no note
