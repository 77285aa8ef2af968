"""Folders given to eval/classify/caption/moderate (issue 13, point 9): only sub-folders holding
images are classes, links never lead out of the tree or into loops, and a missing plotting
library never costs the results."""

from __future__ import annotations

import json
import os
import sys

import pytest
from search_fixtures import save_tiny_checkpoint, write_image

from clipforge.cli.main import main
from clipforge.eval.datasets import collect_images, image_folder


@pytest.fixture
def classes(tmp_path):
    root = tmp_path / "data"
    for c, name in enumerate(("cat", "dog")):
        for i in range(2):
            write_image(root / name / f"{i}.png", 10 * c + i)
    return root


def test_empty_dirs_and_links_are_not_classes(classes, tmp_path):
    (classes / "empty").mkdir()
    os.symlink(classes, classes / "loop")  # a link back to the root: a loop if followed
    outside = tmp_path / "elsewhere"
    write_image(outside / "secret.png", 99)
    os.symlink(outside, classes / "escape")  # a class folder that leads out of the tree
    os.symlink(outside / "secret.png", classes / "cat" / "leak.png")  # a file link out of the tree
    os.symlink(classes / "dog" / "0.png", classes / "cat" / "inside.png")  # a link within the tree: kept
    data = image_folder(classes)
    assert data.classnames == ["cat", "dog"]
    names = sorted(p.name for p in data.paths)
    assert "secret.png" not in names and "leak.png" not in names and "inside.png" in names
    assert len(data.paths) == 5


def test_folder_without_class_folders_holding_images_is_refused(tmp_path):
    flat = tmp_path / "flat"
    write_image(flat / "a.png", 1)
    (flat / "empty").mkdir()
    os.symlink(flat, flat / "loop")
    with pytest.raises(ValueError, match="no class sub-folders holding images"):
        image_folder(flat)


def test_classify_caption_moderate_inputs_never_follow_links_out(classes, tmp_path):
    outside = tmp_path / "elsewhere"
    write_image(outside / "secret.png", 99)
    os.symlink(outside / "secret.png", classes / "cat" / "leak.png")
    os.symlink(outside, classes / "dog" / "escape")
    os.symlink(classes, classes / "dog" / "loop")
    found = collect_images([classes])
    assert len(found) == 4 and all("secret" not in str(p) and "leak" not in p.name for p in found)
    write_image(classes / "top.png", 5)
    assert [p.name for p in collect_images([classes], recursive=False)] == ["top.png"]
    assert collect_images([outside / "secret.png"]) == [outside / "secret.png"]  # named on purpose: kept


def test_eval_without_matplotlib_writes_the_results_and_one_note(classes, tmp_path, monkeypatch, capsys):
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.safetensors")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    out = tmp_path / "r.json"
    rc = main(["eval", "zeroshot", str(classes), "--model", str(ckpt), "--out", str(out), "--no-progress"])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["n_images"] == 4 and "confusion_png" not in result
    err = capsys.readouterr().err
    assert "no confusion-matrix plot" in err and "matplotlib" in err and "Traceback" not in err
