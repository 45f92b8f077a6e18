"""A CPU dry run of the GPU kit with the lent machine's Python: the package's dependencies it lacks fail to import.

Python imports ``sitecustomize`` at start-up from ``PYTHONPATH``, so with this folder on it every
process of the dry run (``train``, ``tune``, ``evaluate`` too) sees what the device's Python sees:
PyTorch, NumPy, SciPy, scikit-image, tifffile, safetensors and imageio, and none of the packages
below (the device's list: /work/.library/device/KINDS.md). The first lent GPU lost a training run
to ``platformdirs``, which a plain dry run here could not show::

    OUT=/tmp/gs DEVICE=cpu MINUTES=0.3 STEPS=2 BATCH=4 PYTHON=.venv/bin/python \\
        PYTHONPATH=benchmarks/device_python bash benchmarks/gpu_session.sh
"""

import sys

LACKING = (
    "platformdirs", "zarr", "ome_zarr", "roifile", "dask", "distributed", "napari", "magicgui", "qtpy", "npe2",
    "PyQt6", "PySide6", "superqt", "app_model", "vispy", "psygnal",
)  # fmt: skip

for _name in LACKING:
    sys.modules[_name] = None  # import raises ModuleNotFoundError
