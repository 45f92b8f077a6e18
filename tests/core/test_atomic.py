import os
import stat
import subprocess
import sys

import pytest

from napari_unet_loop.core import atomic
from napari_unet_loop.core.atomic import atomic_dir, atomic_path


class Boom(Exception):
    pass


def test_successful_write_replaces_the_target(tmp_path):
    target = tmp_path / "out.tif"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp != target
        assert tmp.parent == target.parent and tmp.suffix == ".tif"
        assert target.read_text() == "old"  # untouched while writing
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif"]


def test_failing_write_leaves_the_target_untouched(tmp_path):
    target = tmp_path / "labels.tif"
    target.write_bytes(b"precious")
    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half-writ")
            raise Boom
    assert target.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif"]


def test_failing_first_write_creates_nothing(tmp_path):
    target = tmp_path / "new.csv"
    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            tmp.write_text("a,b")
            raise Boom
    assert list(tmp_path.iterdir()) == []


def test_writer_that_never_writes_still_cleans_up(tmp_path):
    target = tmp_path / "x.bin"
    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            tmp.unlink()  # e.g. a writer that removes its output on failure
            raise Boom
    assert list(tmp_path.iterdir()) == []


def test_no_overwrite_refuses_an_existing_file(tmp_path):
    target = tmp_path / "a.png"
    target.write_text("keep")
    with pytest.raises(FileExistsError, match="exists"):
        with atomic_path(target, overwrite=False) as tmp:
            tmp.write_text("lost")
    assert target.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_no_overwrite_refuses_a_file_that_appears_while_writing(tmp_path):
    target = tmp_path / "race.txt"
    with pytest.raises(FileExistsError, match="appeared"):
        with atomic_path(target, overwrite=False) as tmp:
            tmp.write_text("mine")
            target.write_text("theirs")
    assert target.read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["race.txt"]


def test_no_overwrite_loses_no_race_for_a_new_name(tmp_path, monkeypatch):
    """Another writer taking the name between the last check and the rename keeps its file."""
    target = tmp_path / "new.txt"

    def other_writer_first(path):  # runs after the last existence check, before the name is given
        target.write_text("the other writer's")

    monkeypatch.setattr(atomic, "_fsync_file", other_writer_first)
    with pytest.raises(FileExistsError, match="appeared while writing"):
        with atomic.atomic_path(target, overwrite=False) as tmp:
            tmp.write_text("mine")
    assert target.read_text() == "the other writer's"
    assert [p.name for p in tmp_path.iterdir()] == ["new.txt"]


def test_no_overwrite_writes_a_new_file(tmp_path):
    target = tmp_path / "sub" / "dir" / "fresh.txt"
    with atomic_path(target, overwrite=False) as tmp:
        tmp.write_text("ok")
    assert target.read_text() == "ok"
    assert [p.name for p in target.parent.iterdir()] == ["fresh.txt"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_written_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        target = tmp_path / "atomic.txt"
        with atomic_path(target) as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(plain.stat().st_mode) == 0o644
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_a_long_valid_name_gets_a_short_temporary_name(tmp_path):
    """A 250-byte file name is valid; its temporary name must stay under the 255-byte limit too."""
    target = tmp_path / ("n" * 246 + ".tif")
    assert len(target.name.encode()) == 250
    with atomic_path(target) as tmp:
        assert len(tmp.name.encode()) < 100
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data"
    folder = tmp_path / ("z" * 245 + ".zarr")
    with atomic_dir(folder) as tmp:
        assert len(tmp.name.encode()) < 100
        (tmp / "x").write_text("1")
    assert (folder / "x").read_text() == "1"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporary_names_say_which_process_and_machine_write_them(tmp_path):
    with atomic_path(tmp_path / "a.tif") as tmp:
        assert tmp.name.startswith(f".a.part-{os.getpid()}-h{atomic.HOST}-") and tmp.suffix == ".tif"
        tmp.write_bytes(b"1")
    with atomic_dir(tmp_path / "b.zarr") as tmp:
        assert tmp.name.startswith(f".b.zarr.part-{os.getpid()}-h{atomic.HOST}-")


def test_another_machines_leftovers_are_left_alone(tmp_path):
    """On a shared folder a process id of another machine says nothing: its temporary files may be live writes."""
    dead = _dead_pid()
    other = "0" * 6 if atomic.HOST != "0" * 6 else "1" * 6
    theirs = tmp_path / f".a.part-{dead}-h{other}-k3j2l1.tif"
    theirs.write_bytes(b"another machine is writing this")
    moved = tmp_path / f".cells.zarr.old-{dead}-h{other}-abc123"
    moved.mkdir()  # another machine's store moved aside: not ours to put back
    ours = tmp_path / f".b.part-{dead}-h{atomic.HOST}-q8w7e6.tif"
    ours.write_bytes(b"left by a killed run here")
    legacy = tmp_path / f".c.part-{dead}-z9x8c7.tif"  # written before names had a host tag: judged as this machine's
    legacy.write_bytes(b"old")
    removed = atomic.clean_leftovers(tmp_path)
    assert sorted(removed) == sorted([ours, legacy])
    assert theirs.read_bytes() == b"another machine is writing this" and moved.is_dir()
    assert not (tmp_path / "cells.zarr").exists()


def test_another_machines_leftovers_go_once_stale(tmp_path, monkeypatch):
    """A container gets a new host name with each run: its killed writes are judged by age, and a store moved
    aside is put back."""
    dead = _dead_pid()
    other = "0" * 6 if atomic.HOST != "0" * 6 else "1" * 6
    part = tmp_path / f".a.part-{dead}-h{other}-k3j2l1.tif"
    part.write_bytes(b"a killed write")
    moved = tmp_path / f".cells.zarr.old-{dead}-h{other}-abc123"
    moved.mkdir()
    (moved / "data").write_text("the store")
    assert atomic.clean_leftovers(tmp_path) == []  # just now: maybe a write in progress
    monkeypatch.setattr(atomic, "FOREIGN_STALE_S", -1.0)
    monkeypatch.setattr(atomic, "FOREIGN_OLD_STALE_S", -1.0)
    assert sorted(atomic.clean_leftovers(tmp_path)) == sorted([part, moved])
    assert (tmp_path / "cells.zarr" / "data").read_text() == "the store" and not part.exists()
