import numpy as np
import pytest

from napari_unet_loop.core.image import prepare_input
from napari_unet_loop.core.modality import (
    CHOICES,
    DOUBT_BAND,
    ModalityReport,
    check_choice,
    detect,
    doubt_note,
    haematoxylin,
    input_modality,
    resolve,
    settle_doubt,
    to_fluorescence_like,
)
from napari_unet_loop.core.model_files import new_model
from napari_unet_loop.core.unet import UNetConfig
from napari_unet_loop.sample_data import load_sample


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("nuclei_fluorescence", "fluorescence"),
        ("nuclei_small", "fluorescence"),
        ("nuclei_he_stain", "he"),
        ("nuclei_brightfield", "brightfield"),
    ],
)
def test_detect_tells_the_sample_images_apart(name, kind):
    image, _ = load_sample(name)
    report = detect(image)
    assert report.modality == kind
    assert kind.split("_")[0] in report.describe().lower() or "h&e" in report.describe().lower()


def test_detect_brightfield_is_a_grey_image_with_a_bright_background():
    image, labels = load_sample("nuclei_small")
    bright_field = 255 - image[..., 0]  # dark nuclei on a bright background, grey
    report = detect(bright_field)
    assert report.modality == "brightfield" and report.colour == 0
    assert report.background > 0.8
    # and its conversion gives the nuclei back bright: same normalised input as the fluorescence image
    a = prepare_input(bright_field, modality="brightfield")[0]
    b = prepare_input(image[..., 0], modality="fluorescence")[0]
    assert a[labels > 0].mean() > a[labels == 0].mean() + 0.3
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99


def test_colour_fluorescence_stays_fluorescence():
    """A fluorescence image shown with a colour table (green nuclei on black) is not a stained image."""
    image, _ = load_sample("nuclei_small")
    green = np.zeros((*image.shape[:2], 3), np.uint8)
    green[..., 1] = image[..., 0]
    report = detect(green)
    assert report.modality == "fluorescence" and report.colour > 0.1


def test_haematoxylin_is_bright_in_the_nuclei_of_the_he_sample():
    image, labels = load_sample("nuclei_he_stain")
    h = haematoxylin(image)
    assert h.shape == labels.shape and h.dtype == np.float32
    contrast = (h[labels > 0].mean() - h[labels == 0].mean()) / h.std()
    assert contrast > 2.0  # nuclei bright, background dark (measured 2.9)
    np.testing.assert_allclose(haematoxylin(image.astype(np.float32) / 255), h, atol=1e-5)


def test_to_fluorescence_like_per_kind():
    image, _ = load_sample("nuclei_he_stain")
    grey = image[..., :3].astype(np.float32).mean(-1)
    np.testing.assert_allclose(to_fluorescence_like(image, "fluorescence"), grey)
    np.testing.assert_allclose(to_fluorescence_like(image, "brightfield"), -grey)
    np.testing.assert_allclose(
        to_fluorescence_like(image[..., 0], "he"), -image[..., 0].astype(np.float32)
    )  # grey: as brightfield
    with pytest.raises(ValueError, match="unknown imaging modality"):
        to_fluorescence_like(image, "auto")


class _Reads:
    """An array-like that counts whole reads (``np.asarray``), as a zarr or memory-mapped image would cost."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.ndim, self.dtype, self.reads = data, data.shape, data.ndim, data.dtype, 0

    def __array__(self, dtype=None, copy=None):
        self.reads += 1
        return self.data if dtype is None else self.data.astype(dtype)

    def __getitem__(self, key):
        return self.data[key]


def test_an_he_image_is_read_once_to_know_it_is_colour_and_convert_it():
    image, _ = load_sample("nuclei_he_stain")
    lazy = _Reads(image)
    np.testing.assert_allclose(to_fluorescence_like(lazy, "he"), haematoxylin(image))
    assert lazy.reads == 1  # the shape says it is colour; only the conversion reads the pixels
    model = new_model(UNetConfig(depth=2, base_width=4), name="m", modality="auto")
    lazy.reads = 0
    assert input_modality(model, lazy) == "he" and lazy.reads == 0  # a subsample is read, never the whole


def test_check_choice_and_resolve():
    assert check_choice(None) is None
    assert [check_choice(c) for c in CHOICES] == list(CHOICES)
    assert check_choice("H&E") == "he" and check_choice(" Brightfield ") == "brightfield"
    with pytest.raises(ValueError, match="choose from auto, fluorescence, brightfield, he"):
        check_choice("phase")
    image, _ = load_sample("nuclei_he_stain")
    assert resolve("auto", image) == "he"
    assert resolve("brightfield", image) == "brightfield"
    assert resolve(None, image) == "fluorescence" and resolve("none", image) == "fluorescence"


def test_detect_reads_large_images_on_a_subsample():
    image, _ = load_sample("nuclei_small")
    big = np.tile(255 - image[..., 0], (8, 8))  # 2048 x 2048
    assert detect(big).modality == "brightfield"
    assert detect(np.zeros((32, 32), np.uint8)).modality == "fluorescence"  # constant: nothing to tell


def test_frames_between_fluorescence_and_brightfield_are_in_doubt(phase_like):
    def in_between(background, seed=0):
        return phase_like(background, seed)[0]

    low, high = detect(in_between(0.30)), detect(in_between(0.40))
    assert (low.modality, high.modality) == ("fluorescence", "brightfield")  # two frames, two ways by the line
    assert low.in_doubt and high.in_doubt
    assert DOUBT_BAND[0] < low.background < high.background < DOUBT_BAND[1]
    for name in ("nuclei_fluorescence", "nuclei_brightfield", "nuclei_he_stain"):  # the samples are not
        assert not detect(load_sample(name)[0]).in_doubt
    assert not ModalityReport("he", 0.4, 0.1).in_doubt  # colour: not a grey image
    # a model fine-tuned on such frames reads every frame in between as they were read; the others as detected
    assert low.read_as("brightfield") == high.read_as("brightfield") == "brightfield"
    assert low.read_as(None) == "fluorescence"
    assert resolve("auto", in_between(0.30), kind_in_doubt="brightfield") == "brightfield"
    assert resolve("auto", load_sample("nuclei_fluorescence")[0], kind_in_doubt="brightfield") == "fluorescence"
    assert resolve("fluorescence", in_between(0.40), kind_in_doubt="brightfield") == "fluorescence"  # a choice


def test_a_training_set_in_doubt_settles_on_one_kind(phase_like):
    frames = [detect(phase_like(b, seed)[0]) for seed, b in enumerate((0.30, 0.38, 0.40))]
    assert settle_doubt(frames) == "brightfield"  # the median frame lies above the line
    assert settle_doubt(frames[:1] * 2 + frames[1:2]) == "fluorescence"
    assert settle_doubt(frames, "fluorescence") == "fluorescence"  # the starting model learnt them that way
    clear = [detect(load_sample("nuclei_fluorescence")[0])]
    assert settle_doubt(clear) is None and doubt_note(clear, None) is None
    note = doubt_note([*frames, *clear], "brightfield")
    assert note.startswith("3 of 4 training images lie between fluorescence and brightfield (background 0.30-0.40)")
    assert doubt_note([frames[0], *clear], "brightfield").startswith("1 of 2 training images lies between")
    assert doubt_note(frames[:1], "brightfield").startswith(
        "The training image lies between fluorescence and brightfield (background 0.30): it is read as brightfield"
    )


def test_input_modality_follows_the_card(phase_like):
    model = new_model(UNetConfig(depth=2, base_width=4), name="t", modality="auto")
    frame = phase_like(0.30)[0]
    assert input_modality(model, frame) == "fluorescence"
    model.card.kind_in_doubt = "brightfield"
    assert input_modality(model, frame) == "brightfield"
    assert input_modality(model, frame, "fluorescence") == "fluorescence"
