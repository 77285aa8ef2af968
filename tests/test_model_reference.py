"""Every command that takes a model accepts every kind of model reference: a Hub id resolved from
huggingface_hub's cache (offline), a transformers folder and an OpenAI-layout ``.pt``."""

from __future__ import annotations

import json

import pytest
from hub_fixtures import hub_repo, open_clip_folder, openai_pt, transformers_folder
from search_fixtures import make_folder
from train_helpers import write_pairs_csv

from clipforge.checkpoint import read_checkpoint_info
from clipforge.cli import cmd_serve
from clipforge.cli.main import main

POLICY = "flagged:\n  - a red object\nbenign:\n  - a blue object\n  - a green object\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Model sources, images, a labelled folder, a caption bank, a policy and training pairs."""
    root = tmp_path_factory.mktemp("refs")
    refs = {"openai-pt": str(root / "openai.pt")}
    openai_pt(root / "openai.pt")
    open_clip_folder(root / "oc")
    hub_repo(root / "hf-cache", "acme/oc-tiny", root / "oc")
    refs["hub-id"] = "hf-hub:acme/oc-tiny"
    try:
        transformers_folder(root / "hf")
        refs["hf-folder"] = str(root / "hf")
    except ImportError:
        refs["hf-folder"] = None
    try:  # a transformers SigLIP 2 repo (its own Gemma tokenizer) by Hub id
        from test_convert_siglip import hf_folder as siglip_folder

        siglip_folder(root / "siglip", "siglip2")
        hub_repo(root / "hf-cache", "acme/siglip2-tiny", root / "siglip")
        refs["siglip-hub"] = "acme/siglip2-tiny"
    except (ImportError, pytest.skip.Exception):
        refs["siglip-hub"] = None
    images = make_folder(root / "photos", 4)
    for cls in ("cat", "dog"):
        make_folder(root / "labelled" / cls, 2, start=10 if cls == "dog" else 0)
    (root / "bank.txt").write_text("a cat\na dog\nthe cat and the dog\n")
    (root / "policy.yaml").write_text(POLICY)
    write_pairs_csv(root / "pairs", n=8)
    return root, refs, images


@pytest.fixture(autouse=True)
def _offline_caches(world, tmp_path, monkeypatch):
    root, _, _ = world
    monkeypatch.setenv("HF_HUB_CACHE", str(root / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("CLIPFORGE_CACHE", str(root / "cf-cache"))


def _run(argv: list[str], capsys) -> str:
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return captured.out


COMMANDS = ["classify", "eval", "caption", "moderate", "index+search", "serve", "embed", "export", "merge", "train"]


@pytest.mark.parametrize("kind", ["hub-id", "hf-folder", "openai-pt", "siglip-hub"])
@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.full_suite
def test_command_accepts_reference(command, kind, world, tmp_path, capsys, monkeypatch):
    root, refs, images = world
    ref = refs[kind]
    if ref is None:
        pytest.skip("transformers (the reference writer of Hugging Face folders) is not installed")
    quiet = ["--no-progress"]
    if command == "classify":
        out = _run(["classify", str(images[0]), "--model", ref, "--labels", "cat,dog", "--json", *quiet], capsys)
        assert json.loads(out)["labels"] == ["cat", "dog"]
        assert json.loads(out)["mode"] == ("sigmoid" if kind == "siglip-hub" else "softmax")  # the model's objective
    elif command == "eval":
        result = tmp_path / "r.json"
        _run(["eval", "zeroshot", str(root / "labelled"), "--model", ref, "--out", str(result), *quiet], capsys)
        assert 0.0 <= json.loads(result.read_text())["top1"] <= 1.0
    elif command == "caption":
        out = _run(
            ["caption", str(images[0]), "--model", ref, "--bank", str(root / "bank.txt"), "--json", *quiet], capsys
        )
        assert out.strip()
    elif command == "moderate":
        _run(["moderate", *map(str, images), "--model", ref, "--policy", str(root / "policy.yaml"), *quiet], capsys)
    elif command == "index+search":
        db = tmp_path / "p.cfidx"
        _run(["index", str(root / "photos"), "--model", ref, "--db", str(db), "--workers", "0", *quiet], capsys)
        out = _run(["search", "a cat", "--db", str(db), "--json"], capsys)  # the index remembers its model
        assert len(json.loads(out)) == 4
    elif command == "serve":
        db = tmp_path / "p.cfidx"
        _run(["index", str(root / "photos"), "--model", ref, "--db", str(db), "--workers", "0", *quiet], capsys)
        served = {}
        monkeypatch.setattr("clipforge.serve.run_server", lambda app, **kw: served.update(kw, app=app))
        assert cmd_serve.run  # the command's own code path, up to binding a port
        _run(["serve", ref, "--db", str(db), "--port", "0"], capsys)
        assert served["app"] is not None
    elif command == "embed":
        _run(
            [
                "embed",
                str(root / "photos"),
                "--model",
                ref,
                "--out",
                str(tmp_path / "shards"),
                "--workers",
                "0",
                *quiet,
            ],
            capsys,
        )
        assert list((tmp_path / "shards").glob("*.npy"))
    elif command == "export":
        if kind == "siglip-hub":  # a tiny SigLIP has no timm image tower to name: back to transformers
            _run(["export", ref, str(tmp_path / "hf-out"), "--to", "hf"], capsys)
            assert json.loads((tmp_path / "hf-out" / "config.json").read_text())["model_type"] == "siglip"
        else:
            _run(["export", ref, str(tmp_path / "oc-out"), "--to", "open_clip"], capsys)
            assert (tmp_path / "oc-out" / "open_clip_config.json").is_file()
    elif command == "merge":
        _run(["merge", ref, ref, "--alpha", "0.5", "--out", str(tmp_path / "m.safetensors")], capsys)
        assert read_checkpoint_info(tmp_path / "m.safetensors").provenance["method"] == "wise-ft"
    elif command == "train":
        argv = ["train", "--data", str(root / "pairs" / "pairs.csv"), "--init", ref, "--steps", "1",
                "--batch-size", "4", "--warmup-steps", "1", "--out", str(tmp_path / "runs"), "--name", "ft",
                "--workers", "0", "--precision", "fp32", *quiet]  # fmt: skip
        _run(argv, capsys)
        assert (tmp_path / "runs" / "ft" / "model.safetensors").is_file()
