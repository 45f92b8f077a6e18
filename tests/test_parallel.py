"""Block-wise segmentation into OME-Zarr, here and on a dask LocalCluster: same labels, resumable, fault tolerant."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pytest
import tifffile
import zarr

from napari_unet_loop.core import model_files
from napari_unet_loop.core.metrics import score
from napari_unet_loop.core.segment import segment
from napari_unet_loop.io.chunked import JobMismatchError, LabelsStore, partial_path
from napari_unet_loop.io.lazy import open_lazy
from napari_unet_loop.parallel import ClusterError, segment_to_zarr

pytestmark = pytest.mark.slow
BLOCK = 192


@pytest.fixture(scope="module")
def model():
    try:
        return model_files.load("default")
    except model_files.ModelError:
        pytest.skip("the shipped model is not available")


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """Nuclei-like discs (radius 6-10 px), many across the block borders, as a tiled TIFF."""
    from skimage.draw import disk

    rng = np.random.default_rng(3)
    img = np.zeros((520, 450), np.float32)
    for _ in range(170):
        img[disk((rng.integers(0, 520), rng.integers(0, 450)), rng.integers(6, 11), shape=img.shape)] = 1
    img = (img * 180 + rng.normal(20, 5, img.shape)).clip(0, 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("big") / "cells.tif"
    tifffile.imwrite(path, img, tile=(128, 128))
    return path, img


def labels_of(path) -> np.ndarray:
    group = zarr.open_group(str(path), mode="r")["labels"]
    return np.asarray(group[next(iter(group.group_keys()))]["0"])


@pytest.fixture(scope="module")
def reference(model, image, tmp_path_factory):
    """The run in this process (cluster none)."""
    path, _ = image
    out = tmp_path_factory.mktemp("ref") / "cells.zarr"
    result = segment_to_zarr(open_lazy(path), model, out, block=BLOCK, margin=48)
    return result, labels_of(out)


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=50
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def test_in_process_equals_whole_image_and_in_memory_blocks(model, image, reference):
    _, img = image
    result, labels = reference
    assert labels.dtype == np.uint32 and labels.shape == img.shape
    assert result.blocks == 9 and result.objects > 100
    ids = np.unique(labels[labels > 0])
    assert len(ids) == result.objects  # unique ids, none lost here
    whole = segment(model, img).labels
    s = score(whole, labels)
    assert s.n_true == s.n_pred and s.ap75 == 1.0  # objects smaller than the margin: as whole-image
    blocks = segment(model, img, block=BLOCK).labels  # the single-process block-wise path
    assert np.array_equal(blocks, labels)  # same grid, same margin: byte for byte (int32 vs uint32)


def test_planes_of_one_file_segmented_one_after_another_read_their_own_pixels(model, image, tmp_path):
    """The file is opened once per process; each run reads the plane it names, not the one opened first."""
    _, img = image
    stack = np.stack([img, np.zeros_like(img) + img.min()])  # plane 1: blank
    stack[1, :64, :64] = img[:64, :64]
    path = tmp_path / "two.tif"
    tifffile.imwrite(path, stack, imagej=True, metadata={"axes": "ZYX"})
    first = segment_to_zarr(open_lazy(path, stack=True).plane(0), model, tmp_path / "p0.zarr", block=BLOCK)
    second = segment_to_zarr(open_lazy(path, stack=True).plane(1), model, tmp_path / "p1.zarr", block=BLOCK)
    assert second.objects < first.objects / 4  # the second plane's few objects, not the first's again
    assert not labels_of(tmp_path / "p1.zarr")[64 + 48 :, 64 + 48 :].any()


def test_local_cluster_gives_identical_labels(model, image, reference, client, tmp_path):
    path, _ = image
    out = tmp_path / "cells.zarr"
    result = segment_to_zarr(open_lazy(path), model, out, block=BLOCK, margin=48, cluster=client)
    assert np.array_equal(labels_of(out), reference[1])
    assert result.objects == reference[0].objects


def test_other_block_size_same_objects_unique_ids(model, image, reference, tmp_path):
    path, _ = image
    out = tmp_path / "cells.zarr"
    segment_to_zarr(open_lazy(path), model, out, block=128, margin=48)
    labels = labels_of(out)
    s = score(reference[1], labels)
    assert s.n_true == s.n_pred and s.ap75 == 1.0
    # every id is one connected object: ids never repeat across blocks
    from scipy import ndimage as ndi

    found = ndi.find_objects(labels.astype(np.int64))
    pieces = sum(ndi.label(labels[sl] == i + 1)[1] for i, sl in enumerate(found) if sl is not None)
    assert pieces == len(np.unique(labels[labels > 0]))


def test_resume_finishes_an_interrupted_run(model, image, reference, tmp_path):
    path, _ = image
    out = tmp_path / "cells.zarr"
    src = open_lazy(path)
    part = segment_to_zarr(src, model, out, block=BLOCK, margin=48, stop_after=4)
    assert not out.exists() and part.path == partial_path(out)  # nothing half-done is named .zarr
    with pytest.raises(JobMismatchError, match="resume it"):
        segment_to_zarr(src, model, out, block=BLOCK, margin=48)
    with pytest.raises(JobMismatchError, match="another run"):
        segment_to_zarr(src, model, out, block=BLOCK, margin=96, resume=True)
    # a block that was being written when the run died: data there, no marker -> redone, not trusted
    store = LabelsStore.attach(out)
    store._group()["_scratch"][5] = np.full(store._group()["_scratch"].shape[1:], 7, np.uint32)
    done_before = set(store.done("blocks"))
    assert done_before == {0, 1, 2, 3}
    result = segment_to_zarr(src, model, out, block=BLOCK, margin=48, resume=True)
    assert result.resumed_blocks == 4
    assert np.array_equal(labels_of(out), reference[1])
    assert not partial_path(out).exists()
    attrs = dict(zarr.open_group(str(out), mode="r").attrs)["napari_unet_loop"]
    assert attrs["provenance"]["block"] == BLOCK
    assert attrs["max_label"] == int(reference[1].max())  # corrections draw new objects above it


@pytest.mark.parametrize("where", ["none", "client"])
def test_a_stop_request_ends_the_run_between_tasks_and_resume_finishes_it(
    model, image, reference, tmp_path, request, where
):
    path, _ = image
    out = tmp_path / "cells.zarr"
    cluster = request.getfixturevalue("client") if where == "client" else "none"
    markers = partial_path(out) / "_progress" / "blocks"

    def two_blocks_done() -> bool:  # a Cancel button pressed once two blocks are written
        return len(list(markers.glob("*.json"))) >= 2

    part = segment_to_zarr(
        open_lazy(path), model, out, block=BLOCK, margin=48, cluster=cluster, should_stop=two_blocks_done
    )
    assert not part.complete and not out.exists()
    done = len(LabelsStore.attach(out).done("blocks"))
    assert 2 <= done < 9  # stopped between tasks (tasks already running on workers may finish)
    result = segment_to_zarr(open_lazy(path), model, out, block=BLOCK, margin=48, resume=True)
    assert result.resumed_blocks == done
    assert np.array_equal(labels_of(out), reference[1])


def test_a_corrupt_chunk_without_marker_is_rewritten(model, image, reference, tmp_path):
    path, _ = image
    out = tmp_path / "cells.zarr"
    src = open_lazy(path)
    segment_to_zarr(src, model, out, block=BLOCK, margin=48, stop_after=9)  # all blocks, no cores yet
    store = LabelsStore.attach(out)
    group = store._group()["labels"][store.labels_name]
    group["0"][:BLOCK, :BLOCK] = 12345  # a chunk left over by a killed run, never marked done
    segment_to_zarr(src, model, out, block=BLOCK, margin=48, resume=True)
    assert np.array_equal(labels_of(out), reference[1])


def test_a_killed_worker_does_not_change_the_labels(model, image, reference, tmp_path):
    distributed = pytest.importorskip("distributed")
    path, _ = image
    out = tmp_path / "cells.zarr"
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=50
    )
    killed = []
    with distributed.Client(cluster) as c:
        pids = list(c.run(os.getpid).values())

        def kill_one():  # as soon as the first block is done, one worker dies mid-run
            markers = partial_path(out) / "_progress" / "blocks"
            deadline = time.time() + 120
            while time.time() < deadline and not (markers.is_dir() and any(markers.glob("*.json"))):
                time.sleep(0.05)
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

        t = threading.Thread(target=kill_one, daemon=True)
        t.start()
        segment_to_zarr(open_lazy(path), model, out, block=BLOCK, margin=48, cluster=c)
        t.join(10)
    cluster.close()
    assert killed
    assert np.array_equal(labels_of(out), reference[1])


def test_unreachable_scheduler_is_a_clear_error(model, image, tmp_path):
    pytest.importorskip("distributed")
    path, _ = image
    with pytest.raises(ClusterError, match="cannot reach the dask scheduler"):
        segment_to_zarr(open_lazy(path), model, tmp_path / "x.zarr", block=BLOCK, cluster="tcp://127.0.0.1:9")
    assert not (tmp_path / "x.zarr").exists()


def test_job_record_names_the_input_and_model(model, image, tmp_path):
    path, _ = image
    out = tmp_path / "cells.zarr"
    segment_to_zarr(open_lazy(path), model, out, block=BLOCK, margin=48, stop_after=1)
    job = json.loads((partial_path(out) / "job.json").read_text())
    assert job["input"]["shape"] == [520, 450] and job["model"].endswith(".safetensors")
    assert job["plan"]["block"] == BLOCK


def test_chunks_that_do_not_divide_the_block_are_noted(model, image, tmp_path):
    path, _ = image  # tiles of 128 px, blocks of 192
    lines: list[str] = []
    segment_to_zarr(open_lazy(path), model, tmp_path / "c.zarr", block=BLOCK, margin=48, log=lines.append)
    assert any("chunks of 128 x 128 px, which do not divide the block (192 px)" in ln for ln in lines)
    lines.clear()
    segment_to_zarr(open_lazy(path), model, tmp_path / "d.zarr", block=256, margin=48, log=lines.append)
    assert not any("do not divide" in ln for ln in lines)


def test_a_full_disk_keeps_what_was_written_for_resume(model, image, reference, tmp_path, monkeypatch):
    import errno

    path, _ = image
    out = tmp_path / "cells.zarr"
    real = LabelsStore.write_core
    calls = []

    def fills_up(self, origin, labels, i):
        calls.append(i)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(out))
        return real(self, origin, labels, i)

    monkeypatch.setattr(LabelsStore, "write_core", fills_up)
    with pytest.raises(OSError, match="No space"):
        segment_to_zarr(open_lazy(path), model, out, block=BLOCK, margin=48)
    assert not out.exists() and partial_path(out).is_dir()
    monkeypatch.setattr(LabelsStore, "write_core", real)
    result = segment_to_zarr(open_lazy(path), model, out, block=BLOCK, margin=48, resume=True)
    assert result.resumed_blocks == 9 and result.resumed_cores == 2
    assert np.array_equal(labels_of(out), reference[1])


def test_resume_with_other_prediction_settings_is_refused(model, image, tmp_path):
    path, _ = image
    out = tmp_path / "cells.zarr"
    segment_to_zarr(open_lazy(path), model, out, block=BLOCK, margin=48, stop_after=2)
    with pytest.raises(JobMismatchError, match="predict"):
        segment_to_zarr(open_lazy(path), model, out, block=BLOCK, margin=48, resume=True, tta=False)
    job = json.loads((partial_path(out) / "job.json").read_text())  # a small image: flips averaged by default
    assert len(job["model_sha256"]) == 64 and job["predict"] == {"device": "cpu", "precision": "auto", "tta": True}
    result = segment_to_zarr(open_lazy(path), model, out, block=BLOCK, margin=48, stop_after=1, resume=True)
    assert not result.complete and result.path == partial_path(out)


# ------------------------------------------------------------------ Z stacks, a plane at a time


@pytest.fixture(scope="module")
def spheres(tmp_path_factory):
    """Separated spheres and ellipsoids (radius 7-12 px) in a 20 x 160 x 150 stack, as an OME-Zarr (ZYX)."""
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    rng = np.random.default_rng(5)
    zz, yy, xx = np.mgrid[:20, :160, :150]
    vol = np.zeros((20, 160, 150), np.float32)
    centres = [(10, 30, 30), (9, 30, 110), (11, 100, 40), (10, 110, 115), (8, 70, 75)]
    for cz, cy, cx in centres:
        rz, ry, rx = rng.uniform(5, 7), rng.uniform(8, 12), rng.uniform(8, 12)
        vol[((zz - cz) / rz) ** 2 + ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = 1
    vol = (vol * 180 + rng.normal(20, 5, vol.shape)).clip(0, 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("stack") / "stack.ome.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    write_image(
        vol, root, scale_factors=(), fmt=FormatV04(), axes=["z", "y", "x"], storage_options={"chunks": (1, 64, 64)}
    )
    return path, vol, len(centres)


def _one_object_per_sphere(labels: np.ndarray, vol: np.ndarray) -> int:
    """How many spheres are one 3D object each: nearly all of a sphere's labelled voxels share one id, its own."""
    from scipy import ndimage as ndi

    spheres, n = ndi.label(vol > 100)
    ids = []
    for k in range(1, n + 1):
        inside = labels[(spheres == k) & (labels > 0)]
        top = np.bincount(inside).argmax() if inside.size else 0
        if inside.size and (inside == top).mean() >= 0.95 and (spheres == k).sum() * 0.8 <= inside.size:
            ids.append(int(top))
    return len(set(ids)) if len(set(ids)) == len(ids) else -1


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two labelings group the pixels alike (ids may differ)."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return pairs.shape[1] == np.unique(a).size == np.unique(b).size


def test_z_stitching_joins_along_z_when_the_file_keeps_z_before_t(model, spheres):
    """A ZTYX file (OME-TIFFs stored XYTZC read so): the planes are joined along Z, as for TZYX; stitching the
    axis before Y and X joined each cell across time points and gave cells at other depths one id."""
    from napari_unet_loop.core.planes import SegmentSettings
    from napari_unet_loop.parallel.files import segment_array

    _, vol, n = spheres
    zt = np.stack([vol[4:16], vol[4:16, ::-1]], axis=1)  # (Z, T, Y, X): the second time point flipped
    settings = SegmentSettings(device="cpu", tta=False)
    got, axes, _ = segment_array(zt, "ZTYX", model, settings, stitch_z=0.5)
    want, _, _ = segment_array(zt.transpose(1, 0, 2, 3), "TZYX", model, settings, stitch_z=0.5)
    assert axes == "ZTYX" and got.shape == zt.shape
    assert _same_partition(got.transpose(1, 0, 2, 3), want)
    assert len(np.unique(got[:, 0][got[:, 0] > 0])) == n  # one object per sphere at the first time point


def test_a_stack_a_plane_at_a_time_equals_the_in_memory_stitching(model, spheres, tmp_path, client):
    from napari_unet_loop.core.planes import SegmentSettings
    from napari_unet_loop.parallel import segment_volume_to_zarr
    from napari_unet_loop.parallel.files import segment_array

    path, vol, n = spheres
    settings = SegmentSettings(device="cpu")
    expected, axes, _ = segment_array(vol, "ZYX", model, settings, stitch_z=0.5)
    assert axes == "ZYX"
    assert _one_object_per_sphere(expected, vol) == n
    assert len(np.unique(expected[expected > 0])) == n  # nothing in the planes of pure noise (stack normalisation)
    src = open_lazy(path, stack=True)
    assert src.depth == 20
    out = tmp_path / "stack.zarr"
    part = segment_volume_to_zarr(src, model, out, settings, stitch_z=0.5, block=64, stop_after=12)
    assert not part.complete and not out.exists()  # interrupted in phase 1...
    result = segment_volume_to_zarr(src, model, out, settings, stitch_z=0.5, block=64, resume=True, cluster=client)
    assert result.complete and result.resumed_blocks == 12
    got = labels_of(out)
    assert got.shape == vol.shape
    np.testing.assert_array_equal(got, expected)  # the same 3D objects as in memory
    attrs = dict(zarr.open_group(str(out), mode="r").attrs)["napari_unet_loop"]
    assert attrs["max_label"] == result.objects == len(np.unique(got[got > 0]))
    # without stitching: ids unique over the stack, one per 2D object, planes in order
    flat = tmp_path / "flat.zarr"
    per_plane = segment_volume_to_zarr(src, model, flat, settings, block=64)
    planes = labels_of(flat)
    sizes = [len(np.unique(p[p > 0])) for p in planes]
    assert per_plane.objects == sum(sizes) == len(np.unique(planes[planes > 0]))
    for a, b in zip(planes[:-1], planes[1:], strict=True):
        assert (a.max() if a.any() else 0) < (b[b > 0].min() if b.any() else np.inf)


def test_a_stack_interrupted_while_joining_planes_is_finished_by_resume(model, spheres, tmp_path):
    from napari_unet_loop.core.planes import SegmentSettings
    from napari_unet_loop.parallel import segment_volume_to_zarr
    from napari_unet_loop.parallel.files import segment_array

    path, vol, n = spheres
    settings = SegmentSettings(device="cpu")
    src = open_lazy(path, stack=True)
    out = tmp_path / "stack.zarr"
    part = segment_volume_to_zarr(src, model, out, settings, stitch_z=0.3, block=64, stop_after=20 + 7)
    assert not part.complete and len(LabelsStore.attach(out).done("final")) == 7  # 7 planes joined
    with pytest.raises(JobMismatchError, match="stitch_z"):  # a resume with another threshold is refused
        segment_volume_to_zarr(src, model, out, settings, stitch_z=0.5, block=64, resume=True)
    result = segment_volume_to_zarr(src, model, out, settings, stitch_z=0.3, block=64, resume=True)
    expected, _, _ = segment_array(vol, "ZYX", model, settings, stitch_z=0.3)
    np.testing.assert_array_equal(labels_of(out), expected)  # as if never interrupted
    assert result.objects == len(np.unique(expected[expected > 0])) and _one_object_per_sphere(expected, vol) == n
