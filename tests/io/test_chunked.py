"""The labels store written chunk by chunk: layout, markers after data, partial until complete, resume rules."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from napari_unet_loop.io import chunked
from napari_unet_loop.io.chunked import JobMismatchError, LabelsStore, partial_path
from napari_unet_loop.io.conventions import MAX_LEVELS, ExportError, pyramid_levels
from napari_unet_loop.io.readers import read_ome_zarr

SHAPE = (301, 517)  # odd on purpose: the last row and column of cores are ragged
BLOCK = 128
REGION = BLOCK + 2 * 32
N_BLOCKS = 3 * 5


def make(target, job=None, **kwargs) -> LabelsStore:
    options = {"shape": SHAPE, "block": BLOCK, "region": REGION, "n_blocks": N_BLOCKS}
    options.update(kwargs)
    return LabelsStore.create(target, job=job if job is not None else {"input": "a.tif", "margin": 32}, **options)


def cores(shape=SHAPE, block=BLOCK):
    """``(i, y0, x0, y1, x1)`` of every core, row-major."""
    cols = -(-shape[1] // block)
    rows = -(-shape[0] // block)
    for i in range(rows * cols):
        y0, x0 = (i // cols) * block, (i % cols) * block
        yield i, y0, x0, min(y0 + block, shape[0]), min(x0 + block, shape[1])


def labels_image(shape=SHAPE, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 1000, shape).astype(np.uint32)


def level(path, k: int, name: str = "labels") -> np.ndarray:
    return np.asarray(zarr.open_group(str(path), mode="r")["labels"][name][str(k)])


def test_partial_path_is_a_sibling():
    assert partial_path("/x/y/cells.zarr").as_posix() == "/x/y/cells.zarr.partial"


@pytest.mark.parametrize(
    "shape, block, levels",
    [
        ((301, 517), 128, 2),  # 301 // 4 = 75 >= 64, 301 // 8 = 37 < 64
        ((150, 200), 64, 1),
        ((127, 5000), 64, 0),  # 127 // 2 = 63 < 64
        ((100_000, 100_000), 2048, MAX_LEVELS),
        ((5000, 5000), 96, MAX_LEVELS),  # 96 = 3 * 32 halves evenly four times
        ((5000, 5000), 66, 1),  # 66 / 2 = 33 is odd: one level only
    ],
)
def test_pyramid_levels(shape, block, levels):
    assert pyramid_levels(shape, block) == levels


def test_create_lays_out_a_partial_store(tmp_path):
    target = tmp_path / "cells.zarr"
    store = make(target, name="my cells", scale=(0.5, 0.25), unit="micrometer")
    assert not target.exists() and store.partial == partial_path(target) and store.partial.is_dir()
    assert store.labels_name == "my_cells"
    job = json.loads((store.partial / "job.json").read_text())
    assert job == {
        "input": "a.tif",
        "margin": 32,
        "shape": list(SHAPE),
        "block": BLOCK,
        "region": REGION,
        "n_blocks": N_BLOCKS,
        "dtype": "uint32",
        "name": "my cells",
    }
    assert store.job == job
    root = zarr.open_group(str(store.partial), mode="r")
    assert root["_scratch"].shape == (N_BLOCKS, REGION, REGION)
    group = root["labels"]["my_cells"]
    assert sorted(group.array_keys()) == ["0", "1", "2"]
    for k, want in enumerate([(301, 517), (151, 259), (76, 130)]):
        assert group[str(k)].shape == want and group[str(k)].dtype == np.uint32
        assert group[str(k)].chunks == (min(BLOCK >> k, want[0]), min(BLOCK >> k, want[1]))
    assert store.done("blocks") == {} and store.done("cores") == {}


def test_write_and_read_block(tmp_path):
    store = make(tmp_path / "c.zarr")
    local = np.zeros((150, 170), np.uint32)
    local[10:20, 30:40], local[100:120, 5:9] = 1, 2
    assert store.write_block(4, local) == 2
    assert store.done("blocks") == {4: {"n": 2, "shape": [150, 170]}}
    worker = LabelsStore.attach(tmp_path / "c.zarr")  # another process sees the same
    np.testing.assert_array_equal(worker.read_block(4, (150, 170)), local)
    assert not worker.read_block(3, (150, 170)).any()
    assert store.write_block(5, np.zeros((REGION, REGION), np.uint32)) == 0
    assert store.done("blocks")[5]["n"] == 0


def test_block_view_reads_a_window_of_a_block(tmp_path):
    store = make(tmp_path / "c.zarr")
    local = np.arange(150 * 170, dtype=np.uint32).reshape(150, 170)
    store.write_block(4, local)
    view = store.block_view(4, (150, 170))
    assert tuple(view.shape) == (150, 170)
    np.testing.assert_array_equal(view[10:40, 100:170], local[10:40, 100:170])
    np.testing.assert_array_equal(view[:, :], local)
    np.testing.assert_array_equal(view[140:, :5], local[140:, :5])  # open ends stop at the block, not the region


def test_attach_needs_a_run_in_progress(tmp_path):
    with pytest.raises(ExportError, match="not a run in progress"):
        LabelsStore.attach(tmp_path / "none.zarr")


def test_markers_are_written_only_after_their_data(tmp_path, monkeypatch):
    store = make(tmp_path / "c.zarr")
    local = np.arange(1, 61, dtype=np.uint32).reshape(6, 10)
    full = labels_image()
    seen = []
    write_json = chunked._write_json

    def check(path, data):
        if "_progress" in path.parts:
            root = zarr.open_group(str(store.partial), mode="r")  # what a reader sees right now
            kind, i = path.parent.name, int(path.stem)
            if kind == "blocks":
                np.testing.assert_array_equal(root["_scratch"][i, :6, :10], local)
            else:
                _, y0, x0, y1, x1 = list(cores())[i]
                for k in range(3):
                    f = 2**k
                    got = root["labels"]["labels"][str(k)][y0 // f : -(-y1 // f), x0 // f : -(-x1 // f)]
                    np.testing.assert_array_equal(got, full[y0:y1:f, x0:x1:f])
            seen.append((kind, i))
        write_json(path, data)

    monkeypatch.setattr(chunked, "_write_json", check)
    store.write_block(7, local)
    _, y0, x0, y1, x1 = list(cores())[6]
    store.write_core((y0, x0), full[y0:y1, x0:x1], 6)
    assert seen == [("blocks", 7), ("cores", 6)]
    assert store.done("cores") == {6: {"max": int(full[y0:y1, x0:x1].max())}}


def test_an_unreadable_marker_counts_as_not_done(tmp_path):
    store = make(tmp_path / "c.zarr")
    store.write_block(0, np.ones((4, 4), np.uint32))
    (store.partial / "_progress" / "blocks" / "1.json").write_text('{"n": ')  # cut short
    assert set(store.done("blocks")) == {0}


def test_finished_store_has_every_level_and_reads_back_as_labels(tmp_path):
    target = tmp_path / "cells.zarr"
    store = make(target, name="cells", scale=(0.5, 0.25), unit="micrometer")
    full = labels_image()
    for i, y0, x0, y1, x1 in reversed(list(cores())):  # the order chunks are written in does not matter
        store.write_core((y0, x0), full[y0:y1, x0:x1], i)
    assert not target.exists()  # nothing is named .zarr until it is complete
    assert store.finish({"provenance": {"model": "tiny"}}) == target
    assert target.is_dir() and not partial_path(target).exists()
    assert not any((target / name).exists() for name in ("_scratch", "_progress", "job.json"))
    for k in range(3):
        np.testing.assert_array_equal(level(target, k, "cells"), full[:: 2**k, :: 2**k])  # nearest neighbour
    attrs = dict(zarr.open_group(str(target), mode="r").attrs)["napari_unet_loop"]
    assert attrs["provenance"] == {"model": "tiny"} and attrs["placeholder_image"] is True
    layers = read_ome_zarr(target)
    assert [kind for _, _, kind in layers] == ["labels"]  # the empty placeholder image is skipped
    data, kwargs, _ = layers[0]
    np.testing.assert_array_equal(np.asarray(data), full)
    assert kwargs["name"] == "cells"
    assert list(kwargs["scale"]) == pytest.approx([0.5, 0.25])
    assert list(kwargs["metadata"]["units"]) == ["micrometer", "micrometer"]


def test_a_units_short_name_is_written_as_ngffs(tmp_path):
    """A TIFF's "um" is written as NGFF's "micrometer" (other readers know no "um")."""
    target = tmp_path / "cells.zarr"
    store = make(target, scale=(0.5, 0.5), unit="um")
    for i, y0, x0, y1, x1 in cores():
        store.write_core((y0, x0), labels_image()[y0:y1, x0:x1], i)
    store.finish({})
    ms = dict(zarr.open_group(str(target), mode="r")["labels"]["labels"].attrs)["multiscales"][0]
    assert [a["unit"] for a in ms["axes"]] == ["micrometer", "micrometer"]


def test_create_refuses_an_existing_target_without_overwrite(tmp_path):
    target = tmp_path / "cells.zarr"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="exists"):
        make(target)
    assert not partial_path(target).exists() and (target / "keep.txt").read_text() == "mine"


def test_finish_replaces_an_older_complete_store(tmp_path):
    target = tmp_path / "cells.zarr"
    old = make(target)
    for i, y0, x0, y1, x1 in cores():
        old.write_core((y0, x0), np.full((y1 - y0, x1 - x0), 7, np.uint32), i)
    old.finish()
    (target / "stray.txt").write_text("from the old store")
    new = make(target, overwrite=True)
    full = labels_image(seed=1)
    for i, y0, x0, y1, x1 in cores():
        assert level(target, 0).max() == 7  # the old store stays usable until the new one is complete
        new.write_core((y0, x0), full[y0:y1, x0:x1], i)
    new.finish()
    np.testing.assert_array_equal(level(target, 0), full)
    assert not (target / "stray.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.zarr"]  # no old copy or partial left


def test_a_leftover_partial_needs_resume(tmp_path):
    target = tmp_path / "cells.zarr"
    make(target).write_block(2, np.ones((5, 5), np.uint32))
    with pytest.raises(JobMismatchError, match="interrupted run of this output: resume it"):
        make(target)
    assert LabelsStore.attach(target).done("blocks").keys() == {2}  # the refusal left it alone


def test_resume_of_the_same_job_keeps_the_work_done(tmp_path):
    target = tmp_path / "cells.zarr"
    job = {"input": {"path": "a.tif", "shape": (301, 517)}, "limits": [(np.float32(0.1), 200.0)], "n": np.int64(3)}
    first = make(target, job=job)
    local = np.arange(30, dtype=np.uint32).reshape(5, 6)
    first.write_block(2, local)
    again = make(target, job=job, resume=True)  # tuples and numpy scalars compare equal after the JSON round trip
    assert again.done("blocks") == {2: {"n": 29, "shape": [5, 6]}}
    np.testing.assert_array_equal(again.read_block(2, (5, 6)), local)


@pytest.mark.parametrize(
    "change, words",
    [
        ({"job": {"input": "b.tif", "margin": 32}}, "differs in: input"),
        ({"job": {"input": "a.tif", "margin": 48}}, "differs in: margin"),
        ({"block": 64, "n_blocks": 5 * 9}, "differs in: block, n_blocks"),
        ({"name": "other"}, "differs in: name"),
    ],
)
def test_resume_of_another_job_is_refused(tmp_path, change, words):
    target = tmp_path / "cells.zarr"
    make(target).write_block(0, np.ones((5, 5), np.uint32))
    with pytest.raises(JobMismatchError, match=f"belongs to another run .*{words}"):
        make(target, resume=True, **change)
    assert LabelsStore.attach(target).done("blocks").keys() == {0}
