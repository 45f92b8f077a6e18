"""Small helpers shared by the benchmark scripts (run as ``python benchmarks/bench_*.py``)."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ROOT / "src/napari_unet_loop/models/splits"  # the shipped model's test and validation lists
DATA_CANDIDATES = (ROOT.parent / "shared/data", Path("/work/shared/data"))
ISBI_MIN_SIZE = 30  # ISBI 2012 cells: interior components under this many pixels are dropped


def cpu_name() -> str:
    """The CPU's model name (Linux), else what the platform module knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def read_list(path: Path) -> list[str]:
    """Names listed in a split file (one per line; ``#`` starts a comment line)."""
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def write_json(path: Path | None, report: dict[str, Any]) -> None:
    """Write a benchmark's report as JSON (folders made as needed); nothing without a path."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {path}")


def find_dsb2018(path: Path | None) -> Path:
    """The ``dsb2018`` folder (``images/``, ``labels/``) in ``path``, else in the usual data folders."""
    for p in [path] if path is not None else DATA_CANDIDATES:
        if (p / "dsb2018" / "images").is_dir():
            return p / "dsb2018"
    raise SystemExit(f"no DSB2018 data found (tried {', '.join(str(p) for p in DATA_CANDIDATES)}); use --data")


def imread(path: Path) -> np.ndarray:
    """An image file as an array, as the shared data's PNGs are stored."""
    import imageio.v3 as iio

    return np.asarray(iio.imread(path))


def isbi_instances(mask: np.ndarray) -> np.ndarray:
    """ISBI 2012 cells as instances: 4-connected components of the interior (255), small ones dropped.

    Parameters
    ----------
    mask : numpy.ndarray
        An ISBI 2012 label slice (255 inside cells, 0 on membranes).

    Returns
    -------
    numpy.ndarray
        ``int32`` instance labels; components under :data:`ISBI_MIN_SIZE` pixels removed.
    """
    from skimage.measure import label
    from skimage.segmentation import relabel_sequential

    lab = label(mask == 255, connectivity=1)
    sizes = np.bincount(lab.ravel())
    small = sizes < ISBI_MIN_SIZE
    small[0] = False
    lab[small[lab]] = 0
    return relabel_sequential(lab)[0].astype(np.int32)
