"""Zero-shot applications with a small model trained on the built-in shapes data: moderation,
heat maps, and the classify / caption / moderate commands' outputs."""

import json

import numpy as np
import pytest
from evalkit import hit_rate, two_object_image
from PIL import Image

from clipforge.api import load
from clipforge.cli.main import main
from clipforge.data import ShapesSpec, zero_shot_tasks
from clipforge.data.shapes import colours
from clipforge.data.shapes_scenes import two_object_scene
from clipforge.eval.explain import explain, heat_map
from clipforge.eval.explain_draw import view_geometry
from clipforge.eval.moderate import Moderator
from clipforge.eval.policy import parse_policy
from clipforge.eval.zeroshot import encode_texts

# Every test here uses the session's shapes_model, trained on first use (~37 s on one core of a
# 2-core machine): whichever test runs first pays for it, hence slow, and 300 s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

OTHERS = [c for c in colours() if c != "red"]
POLICY = "flagged:\n  - a red object\nbenign:\n" + "".join(f"  - a {c} object\n" for c in OTHERS)


@pytest.fixture(scope="module")
def loaded(shapes_model):
    return load(shapes_model[0])


@pytest.fixture(scope="module")
def colour_images(loaded, tmp_path_factory):
    """Five single-object images of every shapes colour, as PNG files: {colour: [paths]}."""
    model = loaded.model
    spec = ShapesSpec(image_size=model.config.vision.image_size, eval_per_class=5)
    (task,) = zero_shot_tasks(spec, names=("colour",))
    folder = tmp_path_factory.mktemp("colours")
    out = {}
    for i, target in enumerate(task.targets):
        name = task.classnames[target]
        path = folder / f"{name}-{i:03d}.png"
        task.dataset.image(i).save(path)
        out.setdefault(name, []).append(path)
    return out


def test_moderation_flags_red_images_and_passes_the_others(loaded, colour_images):
    model, tokenizer, transform = loaded
    moderator = Moderator(model, tokenizer, parse_policy(POLICY), transform=transform)
    for colour, paths in colour_images.items():
        decisions = moderator.moderate([Image.open(p).convert("RGB") for p in paths])
        for d in decisions:
            if colour == "red":
                assert d.flagged and d.matched == "a red object" and d.margin >= 0, (colour, d)
            else:
                assert not d.flagged and d.margin < 0 and d.matched != "a red object", (colour, d)


def test_heat_map_of_a_red_circle_is_brightest_on_the_red_circle(loaded):
    model, tokenizer, transform = loaded
    text = encode_texts(model, tokenizer, ["a red circle"])[0]
    size = model.config.vision.image_size

    def shrink(mask):  # (H, W) -> the model's (size, size) view
        small = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.BILINEAR)
        return np.asarray(small) > 127

    contrasts = []
    for seed in range(8):
        image, circle, other = two_object_image(seed)
        circle, other = shrink(circle), shrink(other)
        heat = heat_map(model, transform(image), text).numpy()  # the default method ("auto")
        on_circle, on_other = heat[circle].mean(), heat[other].mean()
        background = heat[~(circle | other)].mean()
        assert on_circle > background + 0.2, (seed, on_circle, background)
        contrasts.append(on_circle - on_other)
    # The one-minute test model is weak on shape, so the circle-vs-other-object contrast is asked of
    # most images and on average rather than of every one.
    assert np.mean(contrasts) > 0.1 and sum(c > 0.1 for c in contrasts) >= 6, contrasts
    ex = explain(model, transform, image, text, text="a red circle")
    assert ex.method == "window" and ex.image.size == image.size and -1.0 <= ex.similarity <= 1.0


def test_default_heat_map_lands_on_the_named_object(loaded):
    # The tests' shared ViT, at the quickstart's input size (64 px, patch 8). Grad-CAM, the previous
    # default, hit 53 % of such scenes on it (its embedding of two objects is often one object's
    # alone; see eval/explain.py and docs/evaluation.md).
    assert hit_rate(loaded) >= 0.9


def test_classify_explain_draws_over_the_original_image_at_its_own_size(shapes_model, tmp_path, capsys):
    """A 150 x 100 photo-like image (wider than the model's square view): the PNG is the original's
    size, the map is blended over the centre square the model sees and peaks on the red disc there,
    and the strips the preprocessing crops off are the original, dimmed."""
    ckpt, _ = shapes_model
    scene = two_object_scene(4)  # a yellow ring at the bottom, another object at the top, 128 px
    assert scene.text == "a yellow ring"
    canvas = np.full((100, 150, 3), np.asarray(scene.image)[0, 0], dtype=np.uint8)
    canvas[:, 25:125] = np.asarray(scene.image.resize((100, 100), Image.BILINEAR))
    canvas[:, :25] = canvas[:, 125:] = (30, 160, 40)  # green strips, cut off by the centre crop
    path = tmp_path / "wide.png"
    Image.fromarray(canvas).save(path)
    templates = tmp_path / "bare.txt"
    templates.write_text("{}\n")
    rc = main(["classify", str(path), "--model", str(ckpt), "--labels", "a yellow ring,a green square",
               "--templates", str(templates), "--json", "--explain", str(tmp_path / "maps"),
               "--no-progress"])  # fmt: skip
    assert rc == 0
    out = json.loads(capsys.readouterr().out)["results"][0]
    assert out["labels"][0]["label"] == "a yellow ring"
    with Image.open(out["explanation"]) as png:
        assert png.size == (150, 100)
        drawn = np.asarray(png.convert("RGB")).astype(int)
    _, _, left, _ = view_geometry(150, 100, size=64, resize_mode="shortest")
    assert left == 16.0  # 150 x 100 -> 96 x 64, crop from x = 16: the crop keeps x in [25, 125)
    dimmed = np.round(canvas[:, :24].astype(float) * 0.45)
    assert np.abs(drawn[:, :24] - dimmed).max() <= 1 and np.abs(drawn[:, 126:] - dimmed).max() <= 1
    # Inside the view, the red end of the colour ramp is on the ring (bottom half), not the top.
    redness = drawn[:, 25:125, 0] - drawn[:, 25:125, 2]  # (100, 100)
    assert redness[50:].mean() > redness[:50].mean() + 20


def test_classify_command_json_table_explain_and_bad_files(shapes_model, colour_images, tmp_path, capsys):
    ckpt, _ = shapes_model
    red, blue = colour_images["red"][0], colour_images["blue"][0]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    labels = "red,blue,green,yellow,orange,purple"
    maps = str(tmp_path / "maps")
    rc = main(["classify", str(red), str(blue), str(broken), "--model", str(ckpt), "--labels", labels,
               "--templates", "objects", "-k", "3", "--json", "--explain", maps, "--no-progress"])
    assert rc == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["labels"] == labels.split(",") and out["mode"] == "softmax"
    assert [r["path"] for r in out["results"]] == [str(red), str(blue)]
    assert out["skipped"] == [{"path": str(broken), "reason": out["skipped"][0]["reason"]}]
    assert "broken.png" in captured.err
    for r, want in zip(out["results"], ["red", "blue"], strict=True):
        scores = [x["score"] for x in r["labels"]]
        assert len(r["labels"]) == 3 and scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
        assert r["labels"][0]["label"] == want
        with Image.open(r["explanation"]) as png:
            assert png.format == "PNG" and png.size == Image.open(red).size
    # the table, and labels from a file
    f = tmp_path / "labels.txt"
    f.write_text("# colours\nred\nblue\n")
    assert main(["classify", str(red), "--model", str(ckpt), "--labels-file", str(f), "--no-progress"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == str(red) and table[1].split()[1] == "red" and len(table) == 3


def test_classify_command_input_errors(shapes_model, colour_images, tmp_path, capsys):
    ckpt, _ = shapes_model
    red = str(colour_images["red"][0])
    assert main(["classify", red, "--model", str(ckpt), "--labels", " , "]) == 1
    assert "label list is empty" in capsys.readouterr().err
    f = tmp_path / "labels.txt"
    f.write_text("red\nblue\nred\n")
    assert main(["classify", red, "--model", str(ckpt), "--labels-file", str(f)]) == 1
    assert f"{f}:3: duplicate entry 'red'" in capsys.readouterr().err
    bad = tmp_path / "only-bad.png"
    bad.write_text("nope")
    assert main(["classify", str(bad), "--model", str(ckpt), "--labels", "red,blue", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "only-bad.png" in err and "none of the images could be read" in err


def test_caption_command_ranks_the_bank(shapes_model, colour_images, tmp_path, capsys):
    ckpt, _ = shapes_model
    bank = tmp_path / "bank.txt"
    bank.write_text("".join(f"a {c} shape\n" for c in colours()) + "# comment\n\n")
    paths = [str(colour_images[c][0]) for c in ("red", "green", "yellow")]
    assert main(["caption", *paths, "--model", str(ckpt), "--bank", str(bank), "-k", "4", "--json",
                 "--no-progress"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["bank_size"] == 10 and out["skipped"] == []
    for r, colour in zip(out["results"], ("red", "green", "yellow"), strict=True):
        sims = [c["similarity"] for c in r["captions"]]
        assert len(r["captions"]) == 4 and sims == sorted(sims, reverse=True)
        assert r["captions"][0]["caption"] == f"a {colour} shape"
        assert all(0 < c["probability"] <= 1 and -1 <= c["similarity"] <= 1 for c in r["captions"])
    assert main(["caption", paths[0], "--model", str(ckpt), "--bank", str(bank), "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == paths[0] and lines[1].endswith("a red shape") and len(lines) == 6


def test_moderate_command_json_explain_and_table(shapes_model, colour_images, tmp_path, capsys):
    ckpt, _ = shapes_model
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    paths = [str(p) for c in ("red", "blue", "orange") for p in colour_images[c][:2]]
    assert main(["moderate", *paths, "--model", str(ckpt), "--policy", str(policy), "--json",
                 "--explain", str(tmp_path / "maps"), "--no-progress"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["flagged"] == 2 and out["passed"] == 4 and out["mode"] == "softmax"
    for r in out["results"]:
        assert {"path", "decision", "matched", "score", "margin", "nearest_flagged", "threshold", "scores",
                "explanation"} <= set(r)  # fmt: skip
        assert r["decision"] == ("flag" if "/red-" in r["path"] else "pass")
        assert (r["margin"] >= 0) == (r["decision"] == "flag") and len(r["scores"]) == 10
        with Image.open(r["explanation"]) as png:
            assert png.format == "PNG"
    assert main(["moderate", *paths[:3], "--model", str(ckpt), "--policy", str(policy), "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[0].startswith("FLAG")
        and lines[2].startswith("PASS")
        and lines[-1] == "2 flagged, 1 passed, 0 skipped"
    )
    policy.write_text(
        "flagged:\n  - description: a red object\n    threshold: lots\nbenign: [a blue object]\n"
    )
    assert main(["moderate", paths[0], "--model", str(ckpt), "--policy", str(policy)]) == 1
    assert f"{policy}:3: flagged[0].threshold: expected a number" in capsys.readouterr().err
