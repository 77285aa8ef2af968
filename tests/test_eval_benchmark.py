"""CLIP_benchmark's WebDataset layout (wds_<name>/) and the built-in class-name/template data files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from test_data_formats import write_tar

from clipforge.checkpoint import save_checkpoint
from clipforge.cli.main import main
from clipforge.eval.clip_benchmark import is_benchmark_dir, load_benchmark
from clipforge.eval.prompts import builtin_classnames, builtin_templates, load_classnames, load_templates
from clipforge.tokenizer import get_tokenizer

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220)}


def test_builtin_evaluation_data_files():
    imagenet = load_classnames("imagenet1k")
    assert len(imagenet) == 1000 and imagenet[0] == "tench" and imagenet[-1] == "toilet paper"
    assert imagenet[657] == imagenet[744] == "missile"  # OpenAI's list, kept index for index
    cifar100 = load_classnames("cifar100")
    assert len(cifar100) == len(set(cifar100)) == 100 and cifar100[1] == "aquarium fish"
    assert len(load_classnames("cifar10")) == 10 and len(load_classnames("pets")) == 37
    assert len(load_classnames("flowers102")) == 102
    openai80 = load_templates("imagenet1k")
    assert len(openai80) == len(set(openai80)) == 80 and "a bad photo of a {}." in openai80
    assert len(load_templates("cifar")) == 18
    assert {"imagenet1k", "cifar100", "stl10"} <= set(builtin_classnames())
    assert {"imagenet1k", "cifar", "default"} <= set(builtin_templates())


def _png(colour: str, jitter: int) -> bytes:
    import io

    r, g, b = COLOURS[colour]
    image = Image.new("RGB", (20, 20), (min(r + jitter, 255), g, b))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def write_benchmark(root: Path, *, retrieval: bool = False) -> Path:
    """wds_colours/: 2 shards of 9 images (3 per colour), classnames, templates, nshards.txt;
    the same images as a class-per-folder tree under root/folder/."""
    bench = root / ("wds_colours_ret" if retrieval else "wds_colours")
    names = list(COLOURS)
    n = 0
    for shard in range(2):
        members = []
        for i in range(9 if shard == 0 else 6):
            colour = names[(i + shard) % 3]
            data = _png(colour, 7 * n)
            members.append((f"s{n:04d}.png", data))
            if retrieval:
                members.append((f"s{n:04d}.txt", f"a {colour} square\na square in {colour}".encode()))
            else:
                members.append((f"s{n:04d}.cls", str(names.index(colour)).encode()))
                folder = root / "folder" / colour
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{n:04d}.png").write_bytes(data)
            n += 1
        write_tar(bench / "test" / f"{shard}.tar", members)
    (bench / "test" / "nshards.txt").write_text("2\n")
    if retrieval:
        (bench / "dataset_type.txt").write_text("retrieval\n")
    else:
        (bench / "classnames.txt").write_text("\n".join(names) + "\n")
        (bench / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\na {c} thing.\n")
    return bench


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_model) -> Path:
    model = tiny_model(seed=0, embed_dim=16, vocab_size=49408)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return save_checkpoint(path, model, tokenizer=get_tokenizer("openai", context_length=16))


def test_benchmark_layout_is_read(tmp_path):
    bench_dir = write_benchmark(tmp_path)
    assert is_benchmark_dir(bench_dir) and not is_benchmark_dir(tmp_path / "folder")
    bench = load_benchmark(bench_dir)
    assert bench.name == "colours" and bench.kind == "classification" and len(bench.shards) == 2
    assert bench.classnames == ("red", "green", "blue") and bench.templates == ("a photo of a {c}.", "a {c} thing.")
    with pytest.raises(FileNotFoundError, match="no split 'train'"):
        load_benchmark(bench_dir, split="train")
    (bench_dir / "zeroshot_classification_templates.txt").write_text("no placeholder\n")
    with pytest.raises(ValueError, match="zeroshot_classification_templates.txt:1"):
        load_benchmark(bench_dir)


@pytest.mark.full_suite
def test_eval_zeroshot_on_benchmark_equals_the_same_images_as_a_folder(tmp_path, checkpoint):
    bench = write_benchmark(tmp_path)
    out_b, out_f = tmp_path / "bench.json", tmp_path / "folder.json"
    common = ["--model", str(checkpoint), "--no-progress", "--precision", "fp32"]
    assert main(["eval", "zeroshot", str(bench), *common, "--out", str(out_b), "--workers", "2"]) == 0
    templates = tmp_path / "t.txt"
    templates.write_text("a photo of a {c}.\na {c} thing.\n")
    assert main(["eval", "zeroshot", str(tmp_path / "folder"), *common, "--out", str(out_f),
                 "--templates", str(templates), "--classnames", str(bench / "classnames.txt")]) == 0  # fmt: skip
    b, f = json.loads(out_b.read_text()), json.loads(out_f.read_text())
    assert b["n_images"] == f["n_images"] == 15 and b["dataset"] == "colours" and b["templates"] == "dataset"
    assert b["top1"] == pytest.approx(f["top1"], abs=1e-6)
    assert b["per_class_top1"] == pytest.approx(f["per_class_top1"], abs=1e-6)
    assert sum(map(sum, b["confusion"])) == 15


def test_eval_retrieval_on_benchmark(tmp_path, checkpoint, capsys):
    bench = write_benchmark(tmp_path, retrieval=True)
    out = tmp_path / "r.json"
    args = ["--model", str(checkpoint), "--no-progress", "--precision", "fp32", "--out", str(out)]
    assert main(["eval", "retrieval", str(bench), *args]) == 0
    result = json.loads(out.read_text())
    assert result["n_images"] == 15 and result["n_captions"] == 30
    assert main(["eval", "zeroshot", str(bench), "--model", str(checkpoint)]) == 1
    assert "use `clipforge eval retrieval`" in capsys.readouterr().err
