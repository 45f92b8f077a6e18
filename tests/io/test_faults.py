"""Killed writers: every file is the old or the new version, records match their data, leftovers go."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile

from napari_unet_loop.core.atomic import atomic_dir, clean_leftovers
from napari_unet_loop.io.export import export_labels, read_sidecar, sidecar_matches

KILL_BETWEEN_DATA_AND_RECORD = """
import os, sys
import numpy as np
import napari_unet_loop.io.export as ex
ex.write_provenance = lambda *a, **k: os._exit(9)   # killed after the data, before its record
labels = np.full((32, 32), int(sys.argv[3]), np.int32)
ex.export_labels(labels, sys.argv[1], sys.argv[2], name="cells", overwrite=True)
"""


def _labels(value: int) -> np.ndarray:
    return np.full((32, 32), value, np.int32)


@pytest.mark.parametrize("fmt", ["zarr", "tif"])
def test_a_record_never_describes_other_data(tmp_path, fmt):
    """Killed between the data and its record: the old record is not left beside the new data."""
    res = export_labels(_labels(1), tmp_path, fmt, name="cells")
    target = res.paths[0]
    assert sidecar_matches(target) is True
    code = subprocess.run([sys.executable, "-c", KILL_BETWEEN_DATA_AND_RECORD, str(tmp_path), fmt, "2"]).returncode
    assert code == 9
    record = read_sidecar(target)
    assert record is None or sidecar_matches(target)  # no record, or one that describes these labels
    hidden = [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert hidden  # the old record, moved aside by the killed writer
    export_labels(_labels(3), tmp_path, fmt, name="other")  # the next write to the folder cleans up
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert sidecar_matches(target) in (None, True)


def test_sidecar_matches_tells_a_changed_file(tmp_path):
    res = export_labels(_labels(1), tmp_path, "tif", name="cells")
    assert sidecar_matches(res.paths[0]) is True
    tifffile.imwrite(res.paths[0], _labels(5).astype(np.uint16))
    assert sidecar_matches(res.paths[0]) is False
    assert sidecar_matches(tmp_path / "nothing.tif") is None


def _count_reads(monkeypatch) -> list:
    """Fresh checksum memory for ``io.sidecar``; the returned list grows by one at each file it hashes."""
    import hashlib
    from collections import OrderedDict

    from napari_unet_loop.io import sidecar

    monkeypatch.setattr(sidecar, "_HASHES", OrderedDict())
    reads: list = []
    real = hashlib.sha256
    monkeypatch.setattr(sidecar.hashlib, "sha256", lambda *a: reads.append(1) or real(*a))
    return reads


def test_a_file_is_hashed_again_only_when_it_changed(tmp_path, monkeypatch):
    from napari_unet_loop.io.sidecar import file_sha256

    reads = _count_reads(monkeypatch)
    monkeypatch.setattr("napari_unet_loop.io.sidecar._SETTLED_NS", 0)  # as if written long ago
    path = tmp_path / "labels.tif"
    path.write_bytes(b"a" * 100)
    first = file_sha256(path)
    assert file_sha256(path) == first and len(reads) == 1  # unchanged: not read again
    stat = path.stat()
    path.write_bytes(b"b" * 100)  # the same size, written again
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert file_sha256(path) != first and len(reads) == 2


def test_a_file_changed_a_moment_ago_is_hashed_at_every_read(tmp_path, monkeypatch):
    """Two writes within one tick of the file system's clock can leave the same times: no memory then."""
    from napari_unet_loop.io import sidecar

    reads = _count_reads(monkeypatch)
    path = tmp_path / "labels.tif"
    path.write_bytes(b"a" * 100)
    first = sidecar.file_sha256(path)
    assert not sidecar._HASHES  # nothing kept of a file written just now
    stat = path.stat()
    path.write_bytes(b"b" * 100)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the same modification time and size as before
    assert sidecar.file_sha256(path) != first and len(reads) == 2


@pytest.mark.parametrize("fmt", ["tif", "png"])
def test_readers_ignore_the_record_of_an_earlier_file(tmp_path, fmt):
    """Another program wrote over an export: its old record (labels, pixel size) no longer speaks for the file."""
    import imageio.v3 as iio

    from napari_unet_loop.io.readers import read_labels

    lab = np.zeros((32, 32), np.uint16)
    lab[4:12, 4:12] = 1
    target = export_labels(lab, tmp_path, fmt, name="cells", scale=[0.5, 0.5], provenance={"model": "m"}).paths[0]
    _, kwargs, kind = read_labels(target)[0]
    assert kind == "labels" and kwargs["scale"] == [0.5, 0.5] and kwargs["metadata"]["napari_unet_loop"]
    write = tifffile.imwrite if fmt == "tif" else iio.imwrite
    noise = np.random.default_rng(0).integers(1, 255, (32, 32), dtype=np.uint8)  # an image, written over it
    write(target, noise)
    with pytest.warns(UserWarning, match="changed since cells"):
        data, kwargs, kind = read_labels(target)[0]
    assert kind == "image" and "scale" not in kwargs and np.array_equal(data, noise)
    assert "napari_unet_loop" not in kwargs["metadata"]  # how it was made: not known any more
    # labels corrected in another program and saved again: still labels, at the recorded pixel size
    fixed = lab.copy()
    fixed[20:28, 20:28] = 2
    write(target, fixed)
    with pytest.warns(UserWarning, match="changed since cells"):
        data, kwargs, kind = read_labels(target)[0]
    assert kind == "labels" and kwargs["scale"] == [0.5, 0.5] and np.array_equal(data, fixed)
    assert "napari_unet_loop" not in kwargs["metadata"]  # how it was made: not known any more


def test_a_roi_set_saved_again_elsewhere_keeps_its_image_shape(tmp_path):
    """ImageJ ROIs exported, corrected in Fiji, saved: the set's image shape lives in its record only."""
    import zipfile

    from napari_unet_loop.io.readers import read_labels

    lab = np.zeros((200, 300), np.uint16)
    lab[20:60, 30:90] = 1
    lab[100:150, 120:170] = 2
    target = export_labels(lab, tmp_path, "roi", name="cells", scale=[0.5, 0.5]).paths[0]
    with zipfile.ZipFile(target) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    with zipfile.ZipFile(target, "w") as zf:  # the same ROIs, written by another program
        for name, data in reversed(members.items()):
            zf.writestr(name, data)
    with pytest.warns(UserWarning, match="changed since cells"):
        data, kwargs, kind = read_labels(target)[0]
    assert kind == "labels" and data.shape == (200, 300) and kwargs["scale"] == [0.5, 0.5]


def test_a_folder_moved_aside_by_a_killed_writer_comes_back(tmp_path):
    """Killed between moving the old folder aside and putting the new one in place."""
    target = tmp_path / "cells.zarr"
    target.mkdir()
    (target / "data").write_text("old")
    dead = _dead_pid()
    os.replace(target, tmp_path / f".cells.zarr.old-{dead}-abc123")
    (tmp_path / f".cells.zarr.part-{dead}-def456").mkdir()  # the new, complete or not
    live = tmp_path / f".x.zarr.part-{os.getpid()}-ghi789"
    live.mkdir()  # a writer still running: left alone
    removed = clean_leftovers(tmp_path)
    assert len(removed) == 2
    assert (target / "data").read_text() == "old"
    assert live.exists()


def test_atomic_dir_cleans_leftovers_of_killed_runs(tmp_path):
    dead = _dead_pid()
    junk = tmp_path / f".a.zarr.part-{dead}-xyz"
    junk.mkdir()
    (junk / "chunk").write_bytes(b"x" * 100)
    with atomic_dir(tmp_path / "b.zarr") as tmp:
        (tmp / "f").write_text("1")
    assert not junk.exists() and (tmp_path / "b.zarr" / "f").exists()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


EXPORT_LOOP = """
import sys
import numpy as np
from napari_unet_loop.io.export import export_labels
for i in range(1, 1000):
    export_labels(np.full((256, 256), i, np.int32), sys.argv[1], sys.argv[2], name="cells", overwrite=True)
    print(i, flush=True)
"""


@pytest.mark.parametrize("fmt", ["zarr", "tif"])
def test_random_kills_during_exports(tmp_path, fmt):
    """SIGKILL at random moments of repeated exports: the data is always whole, and its record matches or is gone."""
    rng = np.random.default_rng(0)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for _ in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-c", EXPORT_LOOP, str(tmp_path), fmt], stdout=subprocess.PIPE, env=env, text=True
        )
        proc.stdout.readline()  # at least one export done, then kill at a random moment of the next ones
        time.sleep(float(rng.uniform(0.0, 0.3)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        target = tmp_path / f"cells.{fmt}"
        if fmt == "tif":
            data = tifffile.imread(target)
        else:
            from napari_unet_loop.io.readers import read_labels

            data = np.asarray(read_labels(str(target))[0][0])
        assert data.shape == (256, 256) and len(np.unique(data)) == 1  # one whole version, never a mix
        record = read_sidecar(target)
        if record is not None:
            assert sidecar_matches(target) is not False
            assert record["labels"]["max_label"] == int(data.max()) or sidecar_matches(target) is None
    export_labels(_labels(1), tmp_path, "csv", name="last")
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    json.dumps(read_sidecar(tmp_path / "last.csv"))


def _kill_at_random(cmd, env, rng, settle, runs):
    """Start ``cmd`` ``runs`` times and SIGKILL it at a random moment after ``settle`` seconds."""
    for _ in range(runs):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(settle + float(rng.uniform(0.0, 1.5)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def _outputs(folder, pattern: str) -> list:
    return [p for p in folder.glob(pattern) if not p.name.startswith(".")]


def test_random_kills_during_segment_leave_whole_files(tmp_path, tiny_model_path):
    """``segment`` killed at random moments: each output is whole (or absent), records match, leftovers go."""
    import imageio.v3 as iio

    from napari_unet_loop.sample_data import sample_path

    src = tmp_path / "in"
    src.mkdir()
    image = iio.imread(sample_path("nuclei_small"))
    for i in range(6):
        iio.imwrite(src / f"img{i}.png", image)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "napari_unet_loop.cli", "segment", str(src), "-o", str(out)]
    cmd += ["--model", str(tiny_model_path), "--format", "tif,zarr", "--overwrite"]
    _kill_at_random(cmd, env, np.random.default_rng(1), settle=1.5, runs=4)
    # the outputs, not a killed writer's hidden temporary files (".img1.part-<pid>-....tif", which
    # pathlib's glob matches too): those are leftovers the next run removes, checked below
    for tif in _outputs(out, "*.tif"):
        labels = tifffile.imread(tif)  # a whole TIFF, never a torn one
        assert labels.shape == image.shape[:2]
        assert sidecar_matches(tif) in (None, True)
    for store in _outputs(out, "*.zarr"):
        assert sidecar_matches(store) in (None, True)
    subprocess.run(cmd, env=env, check=True, capture_output=True)  # the next run finishes and cleans up
    assert sorted(p.name for p in out.glob("*.tif")) == [f"img{i}.tif" for i in range(6)]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert all(sidecar_matches(p) for p in out.glob("*.tif"))


def test_random_kills_during_train_leave_a_loadable_model_or_none(tmp_path, tiny_model_path):
    """``train`` killed at random moments: the model file and the checkpoint are whole or absent."""
    import imageio.v3 as iio

    from napari_unet_loop.core import model_files
    from napari_unet_loop.core.checkpoint import load_checkpoint
    from napari_unet_loop.sample_data import sample_path

    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    iio.imwrite(images / "a.png", iio.imread(sample_path("nuclei_small")))
    tifffile.imwrite(labels / "a.tif", iio.imread(sample_path("nuclei_small", labels=True)))
    out = tmp_path / "m.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "napari_unet_loop.cli", "train", str(images), str(labels), "--out", str(out)]
    cmd += ["--from", str(tiny_model_path), "--minutes", "5", "--patch", "64", "--batch", "2"]
    cmd += ["--val-every", "0.2", "--checkpoint-every", "0.005", "--overwrite", "--no-tune"]
    _kill_at_random(cmd, env, np.random.default_rng(2), settle=2.5, runs=3)
    for model in (out, tmp_path / "m.partial.safetensors"):  # the final model, the best weights so far
        if model.exists():
            model_files.load(model)  # whole: it loads
    ckpt = out.with_suffix(".ckpt")
    if ckpt.exists():
        state, extra = load_checkpoint(ckpt)
        assert state["step"] >= 1 and extra["argv"]
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert all(".part-" in n for n in leftovers)  # only temporaries of killed writers, removed by the next write
