"""Files clipforge writes respect the umask, and temporaries left by a killed save are swept on the
next start (issue 13, points 5 and 7)."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
import torch
from search_fixtures import make_folder, tiny_encoder
from train_helpers import write_pairs_csv, write_tiny_model

from clipforge.cli._apps import emit_json
from clipforge.cli.main import main
from clipforge.convert.export import export_hf, export_open_clip
from clipforge.index import IndexStore, index_folder
from clipforge.index.ann import ann_paths, open_vector_index
from clipforge.tokenizer.vocab import write_hf_files
from clipforge.train.run_dir import RunDir


@pytest.fixture
def umask():
    def set_mask(mask: int) -> None:
        os.umask(mask)

    old = os.umask(0o022)
    yield set_mask
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def written_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_written_files_get_the_umask_mode_not_0600(tmp_path, umask, mask, tiny_model):
    umask(mask)
    want = 0o666 & ~mask
    model = tiny_model(train=True)
    run = RunDir(tmp_path / "run")
    run.save(1, model, tokenizer=None, state={"step": 1}, provenance={})  # weights + resumable state
    export_hf(model, tmp_path / "hf")
    export_open_clip(model, tmp_path / "oc")
    emit_json({"top1": 1.0}, tmp_path / "eval" / "eval.json")  # every `--out` of eval/classify/...
    write_hf_files(tmp_path / "tok", [("a", "b")])
    root, db = tmp_path / "photos", tmp_path / "p.cfidx"
    make_folder(root, 4)
    with IndexStore(db, create=True) as store:
        index_folder(root, store, tiny_encoder(), num_workers=0, progress=False)
        open_vector_index(store, threshold=1)  # persisted IVF: <db>.faiss + .faiss.json
    files = [p for p in written_files(tmp_path) if p.suffix not in (".png", ".bmp", ".jpg")]
    assert ann_paths(db)[0] in files and run.weights_file(1) in files
    assert len(files) >= 10
    wrong = {str(p.relative_to(tmp_path)): oct(mode(p)) for p in files if mode(p) != want}
    # SQLite creates the database itself (with the umask too)
    assert not wrong, f"expected {oct(want)}: {wrong}"


def _age(path: Path, seconds: float) -> Path:
    t = time.time() - seconds
    os.utime(path, (t, t))
    return path


def test_index_start_sweeps_stale_temporaries_of_its_own_files_only(tmp_path):
    root, db = tmp_path / "photos", tmp_path / "p.cfidx"
    make_folder(root, 3)
    paths = ann_paths(db)
    faiss_path, meta_path = paths.index, paths.meta
    stale = tmp_path / f".{faiss_path.name}.k1ll3d.tmp"
    stale.write_bytes(b"x" * 100)
    _age(stale, 3600)
    stale_meta = tmp_path / f".{meta_path.name}.abc.tmp"
    stale_meta.write_text("{")
    _age(stale_meta, 3600)
    live = tmp_path / f".{faiss_path.name}.writing.tmp"  # another process may be writing it now
    live.write_bytes(b"x")
    foreign = tmp_path / ".somebody-else.tmp"
    foreign.write_bytes(b"x")
    _age(foreign, 3600)
    with IndexStore(db, create=True) as store:
        index_folder(root, store, tiny_encoder(), num_workers=0, progress=False)
        open_vector_index(store)
    assert not stale.exists() and not stale_meta.exists()
    assert live.exists() and foreign.exists()


def test_run_dir_sweep(tmp_path, tiny_model):
    run = RunDir(tmp_path)
    run.save(1, tiny_model(train=True), tokenizer=None, state={"step": 1}, provenance={})
    left = [run.checkpoints / ".step-000002.safetensors.x1.tmp", tmp_path / ".run.json.y2.tmp"]
    for p in left:
        p.write_bytes(b"partial")
    keep = tmp_path / "notes.tmp"  # not a temporary of ours (no leading dot)
    keep.write_text("mine")
    assert sorted(run.sweep()) == sorted(left)
    assert keep.exists() and run.latest_step() == 1


@pytest.mark.full_suite
def test_resume_after_a_kill_mid_save_removes_the_leftover(tmp_path):
    data = write_pairs_csv(tmp_path / "data", n=16)
    model = write_tiny_model(tmp_path / "tiny.json")
    base = [
        "train",
        "--data",
        str(data),
        "--model",
        str(model),
        "--batch-size",
        "8",
        "--warmup-steps",
        "1",
        "--out",
        str(tmp_path / "runs"),
        "--name",
        "r",
        "--workers",
        "0",
        "--no-progress",
        "--save-every",
        "1",
    ]
    assert main([*base, "--steps", "1"]) == 0
    ckpts = tmp_path / "runs" / "r" / "checkpoints"
    leftover = ckpts / ".step-000002.safetensors.q9z.tmp"  # what SIGKILL during a save leaves
    leftover.write_bytes(torch.zeros(1000).numpy().tobytes())
    assert main([*base, "--steps", "2", "--resume"]) == 0
    assert not leftover.exists() and not list(ckpts.glob(".*.tmp"))
