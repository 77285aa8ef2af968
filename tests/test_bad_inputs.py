"""Data a command cannot use ends in one line naming the file, the cause and the flag to change,
with exit code 1 (issue 23): CSV/TSV headers without the asked columns, data with no usable pair,
and links out of a folder given to classify / caption / moderate are listed as skipped."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hostile import one_line_error
from search_fixtures import save_tiny_checkpoint, write_image
from train_helpers import write_pairs_csv, write_tiny_model

from clipforge.cli.main import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A pairs CSV over 8 images, the same rows under other headers, a JSONL without a usable row,
    a tiny model config (for train) and a tiny checkpoint (for eval)."""
    root = tmp_path_factory.mktemp("bad-inputs")
    data = write_pairs_csv(root / "data", n=8)
    rows = data.read_text().splitlines()[1:]
    (root / "data" / "caption.csv").write_text("\n".join(["filepath,caption", *rows]) + "\n")
    (root / "data" / "tabbed.csv").write_text("\n".join(["filepath\ttitle", *(r.replace(",", "\t") for r in rows)]))
    image = rows[0].split(",")[0]
    lines = [json.dumps({"image": image, "text": "a red square"}), "{not json", json.dumps({"filepath": image})]
    (root / "data" / "unusable.jsonl").write_text("\n".join(lines) + "\n")
    return {
        "root": root,
        "csv": data,
        "caption_csv": root / "data" / "caption.csv",
        "tabbed": root / "data" / "tabbed.csv",
        "jsonl": root / "data" / "unusable.jsonl",
        "model": write_tiny_model(root / "tiny.json"),
        "ckpt": save_tiny_checkpoint(root / "tiny.safetensors"),
    }


def _train(files, tmp_path, data, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--model", str(files["model"]), "--out", str(tmp_path / "runs"),
            "--name", "r", "--steps", "1", "--workers", "0", "--no-progress", *extra]  # fmt: skip


def _retrieval(files, data, *extra: str) -> list[str]:
    return ["eval", "retrieval", str(data), "--model", str(files["ckpt"]), "--no-progress", *extra]


def _fails(argv: list[str], capsys, *needles: str) -> str:
    assert main(argv) == 1
    return one_line_error(capsys.readouterr().err, f"clipforge {argv[0]}: error:", *needles)


def test_a_csv_without_the_caption_column_names_the_file_the_columns_and_the_flag(files, tmp_path, capsys):
    path = str(files["caption_csv"])
    said = ("no column 'title'", "['filepath', 'caption']", "--caption-key", path + ":1")
    line = _fails(_train(files, tmp_path, path), capsys, *said)
    assert "caption_key" not in line and "--image-key" not in line  # the flag typed, only the one missing
    _fails(_retrieval(files, path), capsys, *said)
    assert not (tmp_path / "runs").exists()  # a run refused for its data leaves nothing behind


def test_a_wrong_image_key_names_the_flag(files, tmp_path, capsys):
    csv = str(files["csv"])
    line = _fails(_train(files, tmp_path, csv, "--image-key", "path"), capsys, "no column 'path'", "--image-key")
    assert "image_key" not in line
    _fails(_retrieval(files, csv, "--image-key", "path"), capsys, "no column 'path'", "--image-key")
    _fails(_train(files, tmp_path, csv, "--cache", str(tmp_path / "cache"), "--image-key", "path"), capsys,
           "no column 'path'", "--image-key")  # fmt: skip


def test_a_tab_separated_csv_says_so(files, tmp_path, capsys):
    _fails(_train(files, tmp_path, files["tabbed"]), capsys, "no column", "tab-separated: name the file .tsv")


def test_labelled_csv_column_errors_name_the_flags(files, capsys):
    labels = files["root"] / "labels.csv"
    labels.write_text("filepath,klass\nimg/0.png,red\n")
    argv = ["eval", "zeroshot", str(labels), "--model", str(files["ckpt"]), "--no-progress"]
    _fails(argv, capsys, "labels.csv:1: no column 'label'", "--label-key")


def test_data_without_a_usable_pair_is_one_line_not_a_division_by_zero(files, tmp_path, capsys):
    jsonl = str(files["jsonl"])
    said = (jsonl, "no usable image-caption pairs", "malformed_row 2", "malformed_json 1")
    said += ("--image-key / --caption-key",)
    line = _fails(_train(files, tmp_path, jsonl), capsys, *said)
    assert "division" not in line and "unusable.jsonl:1: malformed_row" in line  # the first bad row, named
    _fails(_train(files, tmp_path, jsonl, "--cache", str(tmp_path / "cache")), capsys, *said)
    _fails(_retrieval(files, jsonl), capsys, *said)
    empty = files["root"] / "empty"
    empty.mkdir(exist_ok=True)
    line = _fails(_train(files, tmp_path, empty), capsys, "no usable image-caption pairs: it lists no entries")
    assert "--image-key" not in line  # a folder has no columns to choose
    assert not (tmp_path / "runs").exists()


def test_fewer_pairs_than_one_batch_names_the_batch_size(files, tmp_path, capsys):
    _fails(_train(files, tmp_path, files["csv"], "--batch-size", "16"), capsys,
           "8 usable image-caption pairs, fewer than one batch (--batch-size 16)")  # fmt: skip


def test_links_out_of_a_folder_are_in_the_skipped_lists_of_classify_caption_and_moderate(files, tmp_path, capsys):
    folder, outside = tmp_path / "photos", tmp_path / "elsewhere"
    for i in range(2):
        write_image(folder / f"{i}.png", i)
    write_image(outside / "secret.png", 9)
    os.symlink(outside / "secret.png", folder / "leak.png")  # a file link out
    os.symlink(outside, folder / "escape")  # a folder link out
    os.symlink(folder / "0.png", folder / "inside.png")  # a link within the folder is used
    (tmp_path / "bank.txt").write_text("a red square\na blue square\n")
    (tmp_path / "policy.yaml").write_text("threshold: 0.5\nflagged:\n  - a red square\nbenign:\n  - a blue square\n")
    common = ["--model", str(files["ckpt"]), "--json", "--no-progress"]
    expected = [{"path": str(folder / name), "reason": "link points outside the folder (not followed)"}
                for name in ("escape", "leak.png")]  # fmt: skip
    for command, extra in (("classify", ["--labels", "red,blue"]), ("caption", ["--bank", str(tmp_path / "bank.txt")]),
                           ("moderate", ["--policy", str(tmp_path / "policy.yaml")])):  # fmt: skip
        assert main([command, str(folder), *common, *extra]) == 0
        captured = capsys.readouterr()
        out = json.loads(captured.out)
        assert out["skipped"] == expected, command
        assert sorted(Path(r["path"]).name for r in out["results"]) == ["0.png", "1.png", "inside.png"], command
        assert f"skipped {folder / 'leak.png'}: link points outside the folder" in captured.err, command
    only_links = tmp_path / "only-links"
    only_links.mkdir()
    os.symlink(outside / "secret.png", only_links / "leak.png")
    assert main(["classify", str(only_links), *common, "--labels", "red,blue"]) == 1
    one_line_error(capsys.readouterr().err, "no image files in", "leak.png: link points outside the folder")
