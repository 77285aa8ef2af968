"""Expected failures end in one line naming the file and the cause (issue 13, point 6): a full disk
while saving a checkpoint or committing to the index (simulated), and tokenizer inputs of the wrong
type. Data already written stays intact."""

from __future__ import annotations

import errno
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from hostile import one_line_error
from search_fixtures import make_folder, save_tiny_checkpoint
from train_helpers import write_pairs_csv, write_tiny_model

from clipforge.cli.main import main
from clipforge.fileio import atomic_write, atomic_write_text, write_error
from clipforge.index import IndexDatabaseError, IndexStore
from clipforge.tokenizer import TokenizerError, TokenizerInputError, get_tokenizer
from clipforge.train.run_dir import RunDir


def test_atomic_write_reports_storage_failures_naming_the_target(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_text("old")

    def enospc(tmp):
        raise OSError(errno.ENOSPC, "No space left on device", tmp)

    with pytest.raises(OSError) as info:
        atomic_write(target, enospc)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]

    # what torch.save, safetensors and faiss raise when the disk is full: not OSErrors
    for message in (
        "[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file data/0: file write failed",
        'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })',
        "Error in void faiss::write_index: fwrite ... (No space left on device)",
    ):

        def fail(tmp, message=message):
            raise RuntimeError(message)

        with pytest.raises(OSError, match="disk full") as info:
            atomic_write(target, fail)
        assert info.value.filename == str(target) and target.read_text() == "old"

    def bug(tmp):
        raise KeyError("not a storage problem")

    with pytest.raises(KeyError):  # real bugs are not disguised as disk errors
        atomic_write(target, bug)
    assert write_error(target, ValueError("bad value")) is None
    atomic_write_text(target, "new")
    assert target.read_text() == "new"


def test_train_with_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    import safetensors.torch

    data = write_pairs_csv(tmp_path / "data", n=16)
    model = write_tiny_model(tmp_path / "tiny.json")
    real_save = safetensors.torch.save_file
    calls = []

    def save_file(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) >= 2:  # the first checkpoint fits, then the disk is full
            raise RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "..." })')
        return real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    argv = ["train", "--data", str(data), "--model", str(model), "--batch-size", "8", "--warmup-steps", "1",
            "--out", str(tmp_path / "runs"), "--name", "r", "--workers", "0", "--no-progress",
            "--save-every", "1", "--steps", "3"]  # fmt: skip
    assert main(argv) == 1
    line = one_line_error(capsys.readouterr().err, "clipforge train: error:", "step-000002.safetensors")
    assert "No space left" in line or "disk full" in line
    ckpts = tmp_path / "runs" / "r" / "checkpoints"
    assert (ckpts / "step-000001.safetensors").is_file() and not list(ckpts.glob(".*.tmp"))


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (every write fails with ENOSPC)")
@pytest.mark.full_suite
def test_disk_full_while_writing_the_training_state_keeps_no_half_checkpoint(tmp_path, monkeypatch, capsys):
    """The weights of step 2 fit, its training state does not (issue 23, point 2): torch.save's own
    two chained errors, made by writing to /dev/full, become one line, and step 2 is absent."""
    import torch

    data = write_pairs_csv(tmp_path / "data", n=16)
    model = write_tiny_model(tmp_path / "tiny.json")
    real_save = torch.save
    states = []

    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and "optimizer" in obj:  # the training state of a checkpoint step
            states.append(obj["step"])
            if len(states) >= 2:
                return real_save(obj, "/dev/full", *args, **kwargs)
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    argv = ["train", "--data", str(data), "--model", str(model), "--batch-size", "8", "--warmup-steps", "1",
            "--out", str(tmp_path / "runs"), "--name", "r", "--workers", "0", "--no-progress",
            "--save-every", "1", "--steps", "3"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    line = one_line_error(err, "clipforge train: error:", "step-000002.state.pt", "disk full", "iostream error")
    assert "--keep-last" in line and "--out" in line and "unexpected pos" not in err
    ckpts = tmp_path / "runs" / "r" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-000001.safetensors", "step-000001.state.pt"]
    monkeypatch.undo()  # space freed: the run resumes from the last complete step
    assert main([*argv, "--resume"]) == 0
    assert RunDir(tmp_path / "runs" / "r").saved_steps() == [2, 3]


def test_a_step_killed_between_its_weights_and_its_state_is_swept(tmp_path, tiny_model):
    run = RunDir(tmp_path)
    run.save(1, tiny_model(train=True), tokenizer=None, state={"step": 1}, provenance={})
    shutil.copyfile(run.weights_file(1), run.weights_file(2))  # what SIGKILL after the weights leaves
    run.shard_dir(3).mkdir()
    assert sorted(run.sweep()) == sorted([run.weights_file(2), run.shard_dir(3)])
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ["step-000001.safetensors", "step-000001.state.pt"]


@pytest.mark.full_suite
def test_index_commit_with_a_full_disk_is_one_line_and_leaves_the_index_intact(tmp_path, monkeypatch, capsys):
    root, db = tmp_path / "photos", tmp_path / "p.cfidx"
    make_folder(root, 3)
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.safetensors")
    base = ["index", str(root), "--model", str(ckpt), "--db", str(db), "--workers", "0", "--no-progress"]
    assert main(base) == 0
    before = IndexStore(db).count()
    make_folder(root, 200, start=3)  # rows of a tiny model are small: 40 fitted in its 16 KiB pages' free room
    capsys.readouterr()

    real_conn = IndexStore._conn

    def full_conn(self) -> sqlite3.Connection:  # SQLite's own "database or disk is full"
        conn = real_conn(self)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        return conn

    monkeypatch.setattr(IndexStore, "_conn", full_conn)
    assert main(base) == 1
    one_line_error(capsys.readouterr().err, "clipforge index: error:", str(db), "full")
    monkeypatch.undo()
    assert IndexStore(db).count() == before


@pytest.mark.parametrize(
    ("texts", "said"),
    [(None, "got None"), (b"a cat", "bytes (decode it first"), ({"a": "cat"}, "got dict"), (7, "got int"),
     (["a cat", None], "texts[1] must be a str, got None"), ([b"x"], "texts[0] must be a str, got bytes")],
)  # fmt: skip
def test_tokenizer_type_errors_are_clear(texts, said):
    tok = get_tokenizer()
    with pytest.raises(TokenizerInputError, match=re.escape(said)) as info:
        tok(texts)
    assert isinstance(info.value, TypeError) and isinstance(info.value, TokenizerError)
    with pytest.raises(TypeError, match="text must be a str"):
        tok.encode(None)
    assert tok(("a cat", "a dog")).shape[0] == 2  # any sequence of str is fine


_OPEN_WITH_FULL_DISK = """
import resource, signal, sys
from clipforge.cli.main import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (1024, resource.RLIM_INFINITY))
sys.exit(main(["search", "a dog", "--db", sys.argv[1]]))
"""


@pytest.mark.full_suite
def test_a_good_index_on_a_full_disk_is_not_called_a_foreign_database(tmp_path):
    """With a few KB left SQLite cannot make the 32 KB -shm file of a WAL database: "disk I/O error"
    (issue 23, point 4). A file-size limit of 1 KB on a fresh process makes that happen, unprivileged."""
    import subprocess
    import sys

    db = tmp_path / "p.cfidx"
    with IndexStore(db, create=True) as store:
        store.bind(model_id="m", embed_dim=4, root=tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", _OPEN_WITH_FULL_DISK, str(db)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stdout + done.stderr
    line = one_line_error(done.stderr, "clipforge search: error:", str(db), "cannot open the index database",
                          "disk I/O error", "disk may be full", "was not changed")  # fmt: skip
    assert "not a clipforge index" not in line
    assert IndexStore(db).model_id == "m"  # intact: it opens once there is room
    (tmp_path / "other.db").write_bytes(b"SQLite format 3\x00" + bytes(100))  # a broken file still is "not ours"
    with pytest.raises(IndexDatabaseError, match="not a clipforge index database"):
        IndexStore(tmp_path / "other.db")
