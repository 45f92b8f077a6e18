"""Segmentation jobs that run here or on a dask cluster: large images block by block, folders file by file.

- :mod:`.cluster`: where tasks run (:class:`Cluster`: this process, a LocalCluster or a scheduler)
  and the workers' model cache;
- :mod:`.blockwise`: one image larger than memory into an OME-Zarr, block by block
  (:func:`segment_to_zarr`), byte-identical wherever it runs, resumable;
- :mod:`.volume`: a Z stack larger than memory into an OME-Zarr, a plane at a time, its planes
  joined into 3D objects with two planes in memory (:func:`segment_volume_to_zarr`);
- :mod:`.files`: one image file into its label files (:func:`segment_file`), the job the
  ``segment`` command runs per file, and :func:`segment_files` for many (one task per file).

Nothing here imports napari or Qt: it runs in scripts and on cluster workers.
"""

from .blockwise import BlockwiseResult, BlockwiseSpec, run_block, run_core, segment_to_zarr
from .cluster import Cluster, ClusterError, cluster_size, worker_model
from .files import FileJob, FileResult, WriteError, segment_file, segment_files
from .volume import VolumeSpec, run_plane, segment_volume_to_zarr

__all__ = [
    "BlockwiseResult",
    "BlockwiseSpec",
    "Cluster",
    "ClusterError",
    "FileJob",
    "FileResult",
    "VolumeSpec",
    "WriteError",
    "cluster_size",
    "run_block",
    "run_core",
    "run_plane",
    "segment_file",
    "segment_files",
    "segment_to_zarr",
    "segment_volume_to_zarr",
    "worker_model",
]
