"""Corrections written back into a labels OME-Zarr: changed chunks only, every level, ids, crash safety, revert."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from napari_unet_loop.io import store_edits
from napari_unet_loop.io.chunked import LabelsStore
from napari_unet_loop.io.formats.zarr import write_ome_zarr
from napari_unet_loop.io.store_edits import StoreEditError, StoreEditor

SHAPE = (301, 517)  # ragged last row and column of chunks
BLOCK = 128


def build(target, full: np.ndarray, max_label: bool = True):
    """A finished block-wise labels store holding ``full`` (chunks of BLOCK, three levels)."""
    cols, rows = -(-SHAPE[1] // BLOCK), -(-SHAPE[0] // BLOCK)
    store = LabelsStore.create(
        target, job={"input": "a.tif"}, shape=SHAPE, block=BLOCK, region=BLOCK, n_blocks=rows * cols
    )
    for i in range(rows * cols):
        y0, x0 = (i // cols) * BLOCK, (i % cols) * BLOCK
        store.write_core((y0, x0), full[y0 : y0 + BLOCK, x0 : x0 + BLOCK], i)
    return store.finish({"max_label": int(full.max())} if max_label else {})


def blobs() -> np.ndarray:
    """Squares of ids 1..40 on a grid (some cut by chunk borders)."""
    full = np.zeros(SHAPE, np.uint32)
    k = 0
    for y in range(5, SHAPE[0] - 20, 60):
        for x in range(5, SHAPE[1] - 20, 60):
            k += 1
            full[y : y + 20, x : x + 20] = k
    return full


def levels(path) -> list[np.ndarray]:
    group = zarr.open_group(str(path), mode="r")["labels"]["labels"]
    return [np.asarray(group[str(k)]) for k in range(len(list(group.arrays())))]


def check_pyramid(path, expected: np.ndarray) -> None:
    for k, lvl in enumerate(levels(path)):
        np.testing.assert_array_equal(lvl, expected[:: 2**k, :: 2**k])


@pytest.fixture
def store(tmp_path):
    return build(tmp_path / "big.zarr", blobs())


def test_a_window_writes_back_its_changed_pixels_into_every_level(store):
    full = blobs()
    editor = StoreEditor(store)
    assert editor.shape == SHAPE and editor.chunks == (BLOCK, BLOCK)
    for k, (iy, ix) in enumerate(editor.sampling):  # level k shows every 2**k-th pixel, as the store was built
        assert iy.tolist() == list(range(0, SHAPE[0], 2**k)) and ix.tolist() == list(range(0, SHAPE[1], 2**k))
    win = editor.window(100, 250, 100, 300)
    np.testing.assert_array_equal(win.data, full[100:250, 100:300])
    assert not win.dirty()
    label = int(win.data[25, 25])
    assert label  # the square at (125, 125)
    win.data[win.data == label] = 0  # erase one object
    win.data[130:140, 180:190] = int(win.data[85, 85])  # paint onto another (id of the square at 185, 185)
    report = win.write_back()
    expected = full.copy()
    expected[100:250, 100:300] = win.data
    check_pyramid(store, expected)
    touched = {(y // BLOCK, x // BLOCK) for y, x in zip(*np.nonzero(expected != full))}
    assert report.chunks == sorted(touched) and report.pixels == int((expected != full).sum())
    assert not win.dirty() and str(win.write_back()) == "no change to write"  # nothing new: nothing written


def test_only_changed_pixels_are_written_so_overlapping_windows_keep_each_others_edits(store):
    editor = StoreEditor(store)
    a = editor.window(0, 200, 0, 200)
    b = editor.window(100, 300, 100, 300)  # read before a's write-back
    one, two = int(a.data[5, 5]), int(b.data[25, 25])  # ids each window holds
    a.data[120:130, 120:130] = one
    a.write_back()
    b.data[150:160, 150:160] = two
    b.write_back()  # b's stale copy of a's pixels is not written
    now = editor.read(0, SHAPE[0], 0, SHAPE[1])
    assert (now[120:130, 120:130] == one).all() and (now[250:260, 250:260] == two).all()


def test_new_objects_get_ids_above_the_stores_largest(store):
    editor = StoreEditor(store)
    top = editor.max_label()
    assert top == blobs().max()
    win = editor.window(0, 120, 0, 120)
    local_new = int(win.data.max()) + 1  # what napari's "new label" offers in the window
    assert local_new <= top  # an id other objects of the store already have
    win.data[100:110, 100:110] = local_new
    report = win.write_back()
    assert report.new_ids == {local_new: top + 1}
    assert editor.read(100, 110, 100, 110).tolist() == [[top + 1] * 10] * 10
    assert StoreEditor(store).max_label() == top + 1  # recorded in the store
    win.data[0:3, 0:3] = local_new  # more of the same new object: the same store id
    assert win.write_back().new_ids == {}
    assert (editor.read(0, 3, 0, 3) == top + 1).all()
    assert win.next_id() == top + 2


def test_the_largest_id_is_found_once_when_the_store_does_not_record_it(tmp_path, monkeypatch):
    path = build(tmp_path / "b.zarr", blobs(), max_label=False)
    editor = StoreEditor(path)
    # the viewer's brush asks without a pass over the whole store (the GUI thread): the window's largest + 1
    win = editor.window(0, 120, 0, 120)
    scans = []
    real = StoreEditor._chunk_slices
    monkeypatch.setattr(StoreEditor, "_chunk_slices", lambda self, c: scans.append(c) or real(self, c))
    local_new = win.next_id(scan=False)
    assert local_new == int(win.data.max()) + 1 < blobs().max() and scans == []
    assert editor.recorded_max_label() is None
    win.data[100:110, 100:110] = local_new  # an id other objects of the store have: given a free one
    assert win.write_back().new_ids == {local_new: blobs().max() + 1}
    assert len(scans) > editor.grid[0] * editor.grid[1]  # the write-back found the largest id (every chunk)
    assert editor.recorded_max_label() == blobs().max() + 1
    assert dict(zarr.open_group(str(path)).attrs)["napari_unet_loop"]["max_label"] == blobs().max() + 1
    scans.clear()
    assert win.next_id(scan=False) == win.next_id() == blobs().max() + 2 and scans == []  # recorded now


def _crash_after(n: int, win, monkeypatch) -> None:
    """Write ``win`` back in a process that ends after ``n`` chunks are written (a power cut)."""
    real = StoreEditor._write_chunk
    calls = []

    def dies(self, chunk, data):
        if len(calls) == n:
            raise KeyboardInterrupt("power cut")  # the process ends in the middle of a write-back
        calls.append(chunk)
        real(self, chunk, data)

    with monkeypatch.context() as m:
        m.setattr(StoreEditor, "_write_chunk", dies)
        with pytest.raises(KeyboardInterrupt):
            win.write_back()


def test_a_crash_between_journal_and_chunks_is_repaired_on_the_next_open(store, monkeypatch):
    full = blobs()
    editor = StoreEditor(store)
    win = editor.window(0, 301, 0, 517)
    win.data[10:30, 300:320] = 0  # erase the square at (5, 305): chunk (0, 2)
    win.data[250:260, 0:10] = 3  # chunk (1, 0)... and (2, 0)
    _crash_after(1, win, monkeypatch)
    assert list((store / store_edits.EDITS / "pending").glob("*.npy"))  # the journal kept the rest
    again = StoreEditor(store)  # the next session
    assert again.recovered >= 1
    assert not list((store / store_edits.EDITS / "pending").glob("*.npy"))
    check_pyramid(store, win.data)
    assert (win.data != full).any()


def test_revert_puts_the_segmentation_back(store):
    full = blobs()
    editor = StoreEditor(store)
    win = editor.window(0, 301, 0, 517)
    win.data[:] = 0
    win.write_back()
    held = sorted({(int(y) // BLOCK, int(x) // BLOCK) for y, x in zip(*np.nonzero(full))})
    assert editor.edited_chunks() == held  # the chunks that held objects (the empty ones did not change)
    assert editor.revert() == len(held)
    check_pyramid(store, full)
    assert editor.edited_chunks() == []
    kinds = [("reverted" in e, "window" in e) for e in editor.history()]
    assert kinds == [(False, True), (True, False)]


def test_the_log_records_each_write_back(store):
    editor = StoreEditor(store)
    win = editor.window(0, 50, 0, 50)
    win.data[0:4, 0:4] = 5
    win.write_back()
    (entry,) = editor.history()
    assert entry["window"] == [0, 50, 0, 50] and entry["pixels"] == 16 and entry["chunks"] == [[0, 0]]
    assert json.loads((store / store_edits.EDITS / "log.jsonl").read_text().splitlines()[0])["pixels"] == 16
    log = store / store_edits.EDITS / "log.jsonl"
    log.write_text(log.read_text() + '{"time": "2026-12-05", "win')  # an append cut by a crash
    win.data[4:6, 4:6] = 7
    win.write_back()
    assert [e["pixels"] for e in editor.history()] == [16, 4]  # the next entry was glued to the cut line


def export_levels(path) -> list[np.ndarray]:
    group = zarr.open_group(str(path), mode="r")["labels"]["labels"]
    return [np.asarray(group[k]) for k in sorted(group.array_keys())]


@pytest.mark.parametrize(("shape", "levels"), [(SHAPE, None), ((1030, 1030), 5)])
def test_an_export_written_by_write_ome_zarr_is_corrected_at_every_level_as_it_samples(tmp_path, shape, levels):
    rng = np.random.default_rng(1)
    full = np.kron(rng.integers(1, 60, (shape[0] // 10 + 1, shape[1] // 10 + 1)), np.ones((10, 10)))
    full = full[: shape[0], : shape[1]].astype(np.uint32)
    path = tmp_path / "e.zarr"
    write_ome_zarr(path, full, levels=levels)
    editor = StoreEditor(path)
    win = editor.window(37, 700, 101, 900)
    one = int(win.data[10, 10])
    win.data[5:300, 7:333] = one  # an object grown over chunk borders
    win.write_back()
    edited = full.copy()
    edited[37:700, 101:900] = win.data
    again = tmp_path / "again.zarr"
    write_ome_zarr(again, edited, levels=levels)  # what an export of the corrected labels holds
    got, want = export_levels(path), export_levels(again)
    assert len(got) == len(want) >= 3
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_array_equal(a, b, err_msg=f"level {k}")


def test_two_editors_of_one_store_never_give_two_new_objects_one_id(store):
    a = StoreEditor(store).window(0, 100, 0, 100)  # two windows, each with its own editor (as two dock clicks)
    b = StoreEditor(store).window(150, 300, 150, 300)
    a.data[90:95, 90:95] = int(a.data.max()) + 1
    b.data[50:55, 50:55] = int(b.data.max()) + 1
    (ida,) = a.write_back().new_ids.values()
    (idb,) = b.write_back().new_ids.values()
    assert ida != idb and ida > blobs().max() and idb > blobs().max()
    assert StoreEditor(store).max_label() == max(ida, idb)


def test_a_failed_write_back_is_finished_first_and_a_later_undo_still_reaches_the_store(store, monkeypatch):
    full = blobs()
    editor = StoreEditor(store)
    win = editor.window(0, 301, 0, 517)
    one = int(win.data[10, 10])
    win.data[100:140, 100:140] = one  # chunks (0, 0), (0, 1), (1, 0), (1, 1)
    real = StoreEditor._write_chunk
    calls = []

    def disk_full_after_one(self, chunk, data):
        if calls:
            raise OSError(28, "No space left on device")
        calls.append(chunk)
        real(self, chunk, data)

    monkeypatch.setattr(StoreEditor, "_write_chunk", disk_full_after_one)
    with pytest.raises(OSError, match="No space"):
        win.write_back()
    monkeypatch.setattr(StoreEditor, "_write_chunk", real)
    assert win.dirty()  # the journal still holds chunks: the autosave tries again
    win.data[100:140, 100:140] = full[100:140, 100:140]  # the user undoes the stroke meanwhile
    win.write_back()  # the journal goes in first, then the undo on top of it
    assert not win.dirty()
    check_pyramid(store, full)


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: zarr.open_group(str(p), mode="w"), "no labels group"),
        (lambda p: p.mkdir(), "not a zarr store"),
        (lambda p: (p.parent / (p.name + ".partial")).mkdir() or p.parent / (p.name + ".partial"), "unfinished run"),
    ],
)
def test_what_cannot_be_corrected_says_why(tmp_path, make, words):
    path = tmp_path / "x.zarr"
    made = make(path)
    target = made if isinstance(made, type(path)) else path
    with pytest.raises(StoreEditError, match=words):
        StoreEditor(target)


def test_a_window_outside_the_labels_is_refused(store):
    with pytest.raises(StoreEditError, match="holds no pixel"):
        StoreEditor(store).window(400, 500, 0, 10)


def test_a_write_back_of_another_shape_is_refused(store):
    win = StoreEditor(store).window(0, 10, 0, 10)
    with pytest.raises(StoreEditError, match="must not change shape"):
        win.write_back(np.zeros((5, 5), np.uint32))


def test_a_new_object_beyond_the_stores_id_range_is_refused(tmp_path):
    full = blobs().astype(np.uint16)
    path = tmp_path / "u16.zarr"
    write_ome_zarr(path, full)
    root = zarr.open_group(str(path), mode="r+")
    root.attrs["napari_unet_loop"] = {**dict(root.attrs)["napari_unet_loop"], "max_label": 65535}
    win = StoreEditor(path).window(0, 50, 0, 50)
    win.data[40:45, 40:45] = 999  # new to the window
    with pytest.raises(StoreEditError, match="no id left"):
        win.write_back()


STACK = (6, 150, 200)


def stack_blobs() -> np.ndarray:
    """A Z stack of cuboids (ids 1..k), each a few planes deep, some cut by chunk borders."""
    full = np.zeros(STACK, np.uint32)
    k = 0
    for z in (0, 3):
        for y in range(5, STACK[1] - 20, 45):
            for x in range(5, STACK[2] - 20, 45):
                k += 1
                full[z : z + 3, y : y + 20, x : x + 20] = k
    return full


def build_stack(target, full: np.ndarray):
    """A finished plane-at-a-time labels store of a Z stack (chunks one plane deep, levels in Y and X)."""
    store = LabelsStore.create(
        target, job={"input": "s.tif"}, shape=full.shape, block=64, region=0, n_blocks=0, z_scale=2.0
    )
    for z, plane in enumerate(full):
        store.write_plane(z, plane, final=True, record={"n": int(plane.max())})
    return store.finish({"max_label": int(full.max())})


def test_a_z_stack_store_is_corrected_in_a_box_of_planes_at_every_level(tmp_path):
    full = stack_blobs()
    path = build_stack(tmp_path / "stack.zarr", full)
    editor = StoreEditor(path)
    assert editor.ndim == 3 and editor.shape == STACK and editor.chunks[0] == 1
    win = editor.window(20, 140, 30, 190, planes=(1, 5))
    assert win.bounds == (1, 5, 20, 140, 30, 190)
    np.testing.assert_array_equal(win.data, full[1:5, 20:140, 30:190])
    one = int(full[1, 60, 60])  # a cuboid of planes 0-2
    assert one and win.data[0, 40, 30] == one
    win.data[1:3, 40:60, 40:80] = one  # grown onto planes 2 and 3, over a chunk border
    win.data[3, 100:110, 100:110] = int(win.data.max()) + 1  # a new object on one plane
    report = win.write_back()
    (new,) = report.new_ids.values()
    assert new == full.max() + 1
    expected = full.copy()
    expected[1:5, 20:140, 30:190] = np.where(win.data == int(win.data.max()), new, win.data)
    group = zarr.open_group(str(path), mode="r")["labels"]["labels"]
    for k in range(len(list(group.arrays()))):
        np.testing.assert_array_equal(np.asarray(group[str(k)]), expected[:, :: 2**k, :: 2**k], err_msg=f"level {k}")
    touched = {(z, y // 64, x // 64) for z, y, x in zip(*np.nonzero(expected != full))}
    assert report.chunks == sorted(touched) and all(len(c) == 3 for c in report.chunks)
    assert editor.revert() == len(touched)  # the way back works per plane chunk too
    np.testing.assert_array_equal(np.asarray(group["0"]), full)
    with pytest.raises(StoreEditError, match="holds no pixel"):
        editor.window(0, 10, 0, 10, planes=(6, 9))


def test_a_z_stack_exported_by_write_ome_zarr_is_corrected_as_it_samples(tmp_path):
    full = stack_blobs()
    path = tmp_path / "e.zarr"
    write_ome_zarr(path, full, axes="zyx")
    win = StoreEditor(path).window(0, 150, 0, 200)  # every plane by default
    assert win.data.shape == STACK
    win.data[2:4, 10:90, 10:90] = 7
    win.write_back()
    edited = full.copy()
    edited[2:4, 10:90, 10:90] = 7
    again = tmp_path / "again.zarr"
    write_ome_zarr(again, edited, axes="zyx")
    got, want = export_levels(path), export_levels(again)
    assert len(got) == len(want) >= 2
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_array_equal(a, b, err_msg=f"level {k}")


def test_a_crash_in_a_z_stack_write_back_is_repaired_on_the_next_open(tmp_path, monkeypatch):
    full = stack_blobs()
    path = build_stack(tmp_path / "stack.zarr", full)
    win = StoreEditor(path).window(0, 150, 0, 200)
    win.data[1:5, 60:130, 60:130] = 2  # 4 planes x 3 x 3 chunks of 64 px
    _crash_after(3, win, monkeypatch)
    pending = sorted(f.stem for f in (path / store_edits.EDITS / "pending").glob("*.npy"))
    assert pending and all(len(name.split("_")) == 3 for name in pending)  # plane_row_col
    again = StoreEditor(path)  # the next session
    assert again.recovered == len(pending) == 4 * 3 * 3  # the whole journal is written again
    group = zarr.open_group(str(path), mode="r")["labels"]["labels"]
    for k in range(len(list(group.arrays()))):
        np.testing.assert_array_equal(np.asarray(group[str(k)]), win.data[:, :: 2**k, :: 2**k], err_msg=f"level {k}")
    assert again.revert() == 4 * 3 * 3
    np.testing.assert_array_equal(np.asarray(group["0"]), full)


def _two_groups(path):
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image, write_labels

    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    write_image(np.zeros((64, 64), np.uint8), root, scale_factors=(), fmt=FormatV04(), axes=["y", "x"])
    for name, value in (("nuclei", 1), ("cells", 7)):
        labels = np.full((64, 64), value, np.uint32)
        write_labels(labels, root, name=name, fmt=FormatV04(), axes=["y", "x"], scale_factors=())
    return path


def test_each_labels_group_keeps_its_own_journal_and_largest_id(tmp_path):
    """One journal for the store: reverting nuclei wrote the cells' originals into it (all 7)."""
    path = _two_groups(tmp_path / "two.zarr")
    for name in ("cells", "nuclei"):
        win = StoreEditor(path, name=name).window(0, 64, 0, 64)
        win.data[:10] = 0
        win.data[20, 20] = 100  # a new object: an id above the group's own largest
        win.write_back()
    nuclei = StoreEditor(path, name="nuclei")
    assert nuclei.revert() == 1
    assert np.unique(nuclei.read(0, 64, 0, 64)).tolist() == [1]
    cells = StoreEditor(path, name="cells")
    assert cells.edited_chunks() == [(0, 0)] and np.unique(cells.read(0, 64, 0, 64)).tolist() == [0, 7, 8]
    assert cells.max_label() == 8


def test_a_store_whose_labels_arrays_are_read_only_is_refused_before_any_write(store, monkeypatch):
    """The root may be writable and a level's folder not (a shared or copied store): refused with its name."""
    real = store_edits.os.access
    level = store / "labels" / "labels" / "1"
    monkeypatch.setattr(
        store_edits.os, "access", lambda p, mode: False if str(p) == str(level) else real(p, mode)
    )  # root: as real (we run as root in CI, so chmod would not do)
    with pytest.raises(StoreEditError, match=r"cannot be written \(labels/labels/1 is read-only\)"):
        StoreEditor(store)


def test_a_store_exported_with_an_offset_keeps_its_levels_sampling_and_takes_corrections(tmp_path):
    """The offset moves the whole pyramid: each lower level keeps its own half-pixel shift, so a write-back
    rebuilds the lower levels from the pixels they were made from, as in a store without an offset."""
    full = np.tile(np.arange(1, 201, dtype=np.uint16), (200, 1))  # column x holds id x + 1
    plain = write_ome_zarr(tmp_path / "plain.zarr", full, scale=[0.5, 0.5]).paths[0]
    moved = write_ome_zarr(tmp_path / "moved.zarr", full, scale=[0.5, 0.5], translation=[100.0, 50.0]).paths[0]
    for a, b in zip(StoreEditor(plain).sampling, StoreEditor(moved).sampling, strict=True):
        for picks_a, picks_b in zip(a, b, strict=True):
            np.testing.assert_array_equal(picks_a, picks_b)
    for path in (plain, moved):
        win = StoreEditor(path).window(0, 8, 0, 8)
        win.data[0, 0] = 7
        win.write_back()
    a, b = StoreEditor(plain), StoreEditor(moved)
    assert len(a.levels) == len(b.levels) > 1
    for la, lb in zip(a.levels, b.levels, strict=True):
        np.testing.assert_array_equal(np.asarray(la), np.asarray(lb))


@pytest.mark.parametrize("level", ["s0", "s2"])
def test_a_read_only_nested_chunk_folder_is_found_before_anything_is_journaled(tmp_path, monkeypatch, level):
    """Chunks nested in folders (``s0/0/0``): the folder of a chunk the write-back touches is read-only.

    At full resolution or a lower level, the editor opens (its top folders are writable); the write-back
    is refused naming that folder, and neither the labels, their largest id nor the journal change. The
    same window of another group is written as before.
    """
    path = _two_groups(tmp_path / "two.zarr")
    nested = path / "labels" / "nuclei" / level / "0"
    assert (nested / "0").is_file()  # the chunk file lies one folder below the level's
    real = store_edits.os.access
    monkeypatch.setattr(store_edits.os, "access", lambda p, mode: False if str(p) == str(nested) else real(p, mode))
    editor = StoreEditor(path, name="nuclei")
    before, top = editor.read(0, 64, 0, 64).copy(), editor.max_label()
    win = editor.window(0, 64, 0, 64)
    win.data[:10] = 0
    win.data[30, 30] = 50  # a new object: its id is not recorded either
    with pytest.raises(StoreEditError, match=rf"cannot be written \(labels/nuclei/{level}/0 is read-only\).*nothing"):
        win.write_back()
    assert StoreEditor(path, name="nuclei").max_label() == top
    np.testing.assert_array_equal(StoreEditor(path, name="nuclei").read(0, 64, 0, 64), before)
    assert not list((editor.folder / "pending").glob("*.npy"))  # nothing journaled to be written later
    cells = StoreEditor(path, name="cells").window(0, 64, 0, 64)
    cells.data[:10] = 0
    cells.write_back()
    assert not StoreEditor(path, name="cells").read(0, 10, 0, 64).any()


def test_two_windows_written_back_at_once_keep_both_corrections(tmp_path, monkeypatch):
    """Two windows on one chunk, written back from two threads (the dock's autosave): the second waits for the
    first, so neither undoes the other's pixels and the new objects get two ids (without the store's lock the
    second read the chunk before the first wrote it, and wrote it back whole)."""
    import threading
    import time

    path = build(tmp_path / "s.zarr", blobs())
    wa = StoreEditor(path).window(0, 64, 0, 64)  # one editor each, as the dock opens them
    wb = StoreEditor(path).window(64, 128, 64, 128)
    a, b = wa.data.copy(), wb.data.copy()
    a[30:40, 30:40] = wa.next_id(scan=False)  # a new object in each
    b[30:40, 30:40] = wb.next_id(scan=False)
    a_commits, b_started = threading.Event(), threading.Event()
    commit = StoreEditor._commit

    def slow_commit(self, *args, **kwargs):
        if not a_commits.is_set():  # the first write-back: let the second start while it has read its chunk
            a_commits.set()
            b_started.wait(5)
            time.sleep(0.3)
        return commit(self, *args, **kwargs)

    monkeypatch.setattr(StoreEditor, "_commit", slow_commit)
    reports = {}

    def second():
        a_commits.wait(5)
        b_started.set()
        reports["b"] = wb.write_back(b)

    thread = threading.Thread(target=second)
    thread.start()
    reports["a"] = wa.write_back(a)
    thread.join(10)
    store = levels(path)[0]
    (ia,), (ib,) = reports["a"].new_ids.values(), reports["b"].new_ids.values()
    assert ia != ib
    assert (store[30:40, 30:40] == ia).all() and (store[94:104, 94:104] == ib).all()
    assert not wa.dirty(a) and not wb.dirty(b)
