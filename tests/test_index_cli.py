"""The index / search / embed commands, run in-process through the CLI entry point."""

from __future__ import annotations

import json

import pytest
from search_fixtures import make_folder, save_tiny_checkpoint, write_image

from clipforge.cli.main import main

# `index` encodes at precision auto, whose meaning depends on the CPU: run every test both ways
pytestmark = pytest.mark.usefixtures("cpu_probe")

@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_index_report_and_image_search(tmp_path, ckpt, capsys):
    root, db = tmp_path / "photos", tmp_path / "p.cfidx"
    make_folder(root, 6)
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (root / "readme.txt").write_text("ignored: not an image extension")
    code, out, _ = cli(
        capsys,
        "index",
        str(root),
        "--model",
        str(ckpt),
        "--db",
        str(db),
        "--report",
        "--workers",
        "0",
        "--no-progress",
    )
    assert code == 0
    assert "6 images indexed" in out and "1 skipped" in out
    assert "corrupt.jpg:" in out  # listed with its reason

    code, out, _ = cli(
        capsys,
        "index",
        str(root),
        "--model",
        str(ckpt),
        "--db",
        str(db),
        "--json",
        "--workers",
        "0",
        "--no-progress",
    )
    report = json.loads(out)
    assert report["index"]["unchanged"] == 6 and report["index"]["added"] == 0
    assert report["skipped"][0]["path"] == "corrupt.jpg" and report["search"]["kind"] == "exact"

    query = root / "d2" / "img0005.tiff"
    html = tmp_path / "out.html"
    code, out, _ = cli(
        capsys, "search", "--db", str(db), "--image", str(query), "-k", "3", "--json", "--html", str(html)
    )
    hits = json.loads(out)
    assert code == 0 and len(hits) == 3 and hits[0]["path"] == "d2/img0005.tiff"
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    page = html.read_text()
    assert page.count("data:image/jpeg;base64,") == 3 and "d2/img0005.tiff" in page
    assert "http://" not in page and "https://" not in page  # self-contained

    code, out, _ = cli(capsys, "search", "--db", str(db), "--image", str(query), "-k", "2")
    assert code == 0 and "img0005.tiff" in out.splitlines()[1]


def test_text_search_through_the_checkpoint_tokenizer(tmp_path, ckpt, capsys):
    from clipforge.checkpoint import read_checkpoint_info
    from clipforge.inference import tokenizer_for

    info = read_checkpoint_info(ckpt)
    tokenizer_for(info.config, info.tokenizer)  # the checkpoint's own, or the packaged OpenAI vocabulary
    root, db = tmp_path / "photos", tmp_path / "p.cfidx"
    make_folder(root, 4)
    assert (
        cli(
            capsys,
            "index",
            str(root),
            "--model",
            str(ckpt),
            "--db",
            str(db),
            "--workers",
            "0",
            "--no-progress",
        )[0]
        == 0
    )
    code, out, _ = cli(capsys, "search", "a dog on a beach", "--db", str(db), "-k", "4", "--json")
    assert code == 0 and len(json.loads(out)) == 4
    code, out, _ = cli(
        capsys,
        "search",
        "a dog",
        "--image",
        str(root / "d0" / "img0000.png"),
        "--db",
        str(db),
        "--image-weight",
        "0.95",
        "--json",
    )
    assert json.loads(out)[0]["path"] == "d0/img0000.png"


@pytest.mark.full_suite
def test_model_mismatch_and_rebuild(tmp_path, ckpt, capsys):
    root, db = tmp_path / "photos", tmp_path / "p.cfidx"
    make_folder(root, 3)
    other = save_tiny_checkpoint(tmp_path / "other.safetensors", seed=1)
    assert (
        cli(
            capsys,
            "index",
            str(root),
            "--model",
            str(ckpt),
            "--db",
            str(db),
            "--workers",
            "0",
            "--no-progress",
        )[0]
        == 0
    )
    code, _, err = cli(
        capsys, "index", str(root), "--model", str(other), "--db", str(db), "--workers", "0", "--no-progress"
    )
    assert code == 1 and "built with model" in err and "--rebuild" in err
    code, _, err = cli(
        capsys, "search", "--db", str(db), "--model", str(other), "--image", str(root / "d0" / "img0000.png")
    )
    assert code == 1 and "built with model" in err
    code, out, _ = cli(
        capsys,
        "index",
        str(root),
        "--model",
        str(other),
        "--db",
        str(db),
        "--rebuild",
        "--workers",
        "0",
        "--no-progress",
    )
    assert code == 0 and "3 embedded" in out


def test_user_errors_are_one_line(tmp_path, ckpt, capsys):
    code, _, err = cli(capsys, "search", "x", "--db", str(tmp_path / "missing.cfidx"))
    assert code == 1 and "no index database" in err and "Traceback" not in err
    code, _, err = cli(
        capsys, "index", str(tmp_path / "nope"), "--model", str(ckpt), "--db", str(tmp_path / "i")
    )
    assert code == 1 and "not a directory" in err
    code, _, err = cli(capsys, "index", "--db", str(tmp_path / "i"))
    assert code == 1 and "--model" in err


@pytest.mark.full_suite
def test_embed_shards_then_merge(tmp_path, ckpt, capsys, monkeypatch):
    root, out_dir, db = tmp_path / "photos", tmp_path / "emb", tmp_path / "m.cfidx"
    make_folder(root, 5)
    for rank in range(2):  # what torchrun would set for two processes
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        code, out, _ = cli(
            capsys,
            "embed",
            str(root),
            "--model",
            str(ckpt),
            "--out",
            str(out_dir),
            "--workers",
            "0",
            "--device",
            "cpu",
            "--precision",
            "fp32",
            "--no-progress",
        )
        assert code == 0 and f"rank {rank}/2" in out
    code, out, _ = cli(
        capsys,
        "index",
        "--from-embeddings",
        str(out_dir),
        "--model",
        str(ckpt),
        "--db",
        str(db),
        "--json",
        "--no-progress",
    )
    assert code == 0 and json.loads(out)["merged"]["added"] == 5
    write_image(root / "extra.png", 50)  # then an incremental run over the folder adds only the new file
    code, out, _ = cli(
        capsys,
        "index",
        str(root),
        "--model",
        str(ckpt),
        "--db",
        str(db),
        "--json",
        "--workers",
        "0",
        "--no-progress",
    )
    assert json.loads(out)["index"]["added"] == 1 and json.loads(out)["index"]["total"] == 6
