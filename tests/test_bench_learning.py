"""The learning benchmark's data builder and harness (benchmarks/learning_data.py, bench_learning.py):
concept parsing, icon lookup, captions, the files written, the open_clip twin of its model, and the
per-configuration summary. No network, no rendering, no training."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from clipforge.convert.open_clip import config_from
from clipforge.models.factory import get_model_config

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))
import bench_learning  # noqa: E402  (benchmark scripts, not a package)
import learning_data  # noqa: E402


@pytest.fixture
def words(tmp_path):
    """A two-emoji emojibase-data + emojilib pair (plus a skin tone, a component and an ungrouped one)."""
    base = tmp_path / "emojibase" / "en"
    base.mkdir(parents=True)
    data = [
        {"label": "grinning face", "hexcode": "1F600", "emoji": "\U0001f600", "tags": ["face", "grin"],
         "group": 0, "subgroup": 0},
        {"label": "red heart", "hexcode": "2764-FE0F", "emoji": "\u2764\ufe0f", "tags": ["heart"],
         "group": 2, "subgroup": 1},
        {"label": "light skin tone", "hexcode": "1F3FB", "emoji": "\U0001f3fb", "group": 1, "subgroup": 1},
        {"label": "regional indicator A", "hexcode": "1F1E6", "emoji": "\U0001f1e6"},
    ]  # fmt: skip
    messages = {
        "groups": [
            {"key": "smileys-emotion", "message": "smileys & emotion", "order": 0},
            {"key": "component", "message": "components", "order": 1},
            {"key": "symbols", "message": "symbols", "order": 2},
        ],
        "subgroups": [{"key": "face-smiling", "order": 0}, {"key": "heart", "order": 1}],
    }
    (base / "data.json").write_text(json.dumps(data))
    (base / "messages.json").write_text(json.dumps(messages))
    lib = tmp_path / "emojilib" / "dist"
    lib.mkdir(parents=True)
    (lib / "emoji-en-US.json").write_text(json.dumps({"\U0001f600": ["grinning_face", "smile", "happy_face"]}))
    return base.parent, lib.parent


def test_concepts_skip_components_and_ungrouped_and_read_keywords(words):
    concepts = learning_data.load_concepts(*words)
    assert [c.label for c in concepts] == ["grinning face", "red heart"]
    grin, heart = concepts
    assert grin.keywords == ("smile", "happy_face")  # the snake_case name is dropped
    assert (grin.group, grin.subgroup) == ("smileys & emotion", "face smiling")
    assert heart.keywords == ()


def test_captions_are_five_distinct_and_never_name_a_style(words):
    grin, heart = learning_data.load_concepts(*words)
    caps = learning_data.captions_of(grin)
    assert len(caps) == len(set(caps)) == 5
    assert caps[0] == "an emoji of grinning face" and "face, grin" in caps and "smile, happy face" in caps
    assert learning_data.captions_of(heart)[3] == "heart"  # no keywords: the tags stand in
    for style in learning_data.STYLE_PACKAGES:
        assert not any(style in c for c in caps)


def test_icons_resolve_aliases_and_the_fe0f_variant(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    icons = {
        "width": 36, "height": 36,
        "icons": {"grin": {"body": "<circle r='9'/>"}, "heart": {"body": "<path d='M0 0'/>", "width": 72}},
        "aliases": {"red-heart": {"parent": "heart"}},
    }  # fmt: skip
    (pkg / "icons.json").write_text(json.dumps(icons))
    (pkg / "chars.json").write_text(json.dumps({"1f600": "grin", "2764": "red-heart", "1f4a9": "missing"}))
    svgs = learning_data._icon_svgs(pkg)
    assert set(svgs) == {"1f600", "2764"}
    assert 'viewBox="0 0 36 36"' in learning_data._find(svgs, "1F600")
    heart = learning_data._find(svgs, "2764-FE0F")  # emojibase's code with FE0F, the set's without
    assert heart is not None and 'viewBox="0 0 72 36"' in heart and "M0 0" in heart
    assert learning_data._find(svgs, "1F4A9") is None


def test_files_hold_out_one_whole_style(tmp_path, words):
    concepts = learning_data.load_concepts(*words)
    rows = {s: [(f"{s}/{c.hexcode}.png", c) for c in concepts] for s in learning_data.STYLE_PACKAGES}
    learning_data._write(tmp_path, rows)
    train = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert len(train) == 2 * len(learning_data.TRAIN_STYLES)
    assert not any(r["filepath"].startswith(learning_data.HELDOUT_STYLE) for r in train)
    with open(tmp_path / "train_flat.csv", newline="") as f:
        flat = list(csv.DictReader(f))
    assert len(flat) == 5 * len(train)  # one row per (image, caption)
    held = [json.loads(line) for line in (tmp_path / "heldout.jsonl").read_text().splitlines()]
    assert {r["filepath"].split("/")[0] for r in held} == {learning_data.HELDOUT_STYLE}
    with open(tmp_path / "heldout_group.csv", newline="") as f:
        assert [r["label"] for r in csv.DictReader(f)] == ["smileys & emotion", "symbols"]


def test_open_clip_twin_is_the_same_architecture():
    ours = get_model_config(bench_learning.MODEL)
    twin = config_from(bench_learning.open_clip_config())
    assert twin.vision == ours.vision and twin.text == ours.text and twin.embed_dim == ours.embed_dim


def test_summary_is_mean_and_half_range_over_seeds():
    def run(seed, r5):
        metrics = {k: 0.0 for k, _ in bench_learning.METRICS} | {"zs_group_top1": 1.0, "zs_subgroup_top1": 2.0}
        metrics["t2i_R@5"] = r5
        return {"config": "a", "seed": seed, "steps": 10, "train_s": 5.0, "metrics": metrics, "command": "x"}

    (row,) = bench_learning.summarise([run(0, 10.0), run(1, 14.0)])
    assert row["t2i_R@5"] == (12.0, 2.0) and row["seeds"] == [0, 1] and row["zs_group_top1"] == (1.0, 0.0)


def test_step_rate_is_the_median_after_warm_up_and_reads_either_run_json(tmp_path):
    rows = [{"step": 5, "samples_per_s": 1.0}, {"step": 10, "samples_per_s": 2.0}]  # warm-up: ignored
    rows += [{"step": s, "samples_per_s": r} for s, r in ((20, 256.0), (25, 128.0), (30, 384.0), (35, 9999.0))]
    rows.insert(3, {"step": 22, "loss": 1.0})  # rows without a rate are skipped
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for saved in ({"data": "p.csv", "batch_size": 128}, {"data": {"source": "p.csv"}, "schedule": {"batch_size": 128}}):
        (tmp_path / "run.json").write_text(json.dumps(saved))
        assert bench_learning.step_rate(tmp_path) == pytest.approx((256.0 + 384.0) / 2 / 128)
