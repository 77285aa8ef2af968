"""Moderation policies (parsing, errors naming line and key) and the decision rule on hand-made scores."""

import pytest
import torch
from evalkit import WordTokenizer

from clipforge.eval.moderate import Moderator
from clipforge.eval.policy import PolicyError, load_policy, parse_policy

GOOD = """\
# moderation policy
threshold: 0.4
flagged:
  - a red object
  - description: a weapon
    threshold: 0.25
benign:
  - a blue object
  - a green object
"""


def test_policy_parses_defaults_and_per_description_thresholds(tmp_path):
    f = tmp_path / "policy.yaml"
    f.write_text(GOOD)
    p = load_policy(f)
    assert [(r.description, r.threshold, r.line) for r in p.flagged] == [
        ("a red object", 0.4, 4),
        ("a weapon", 0.25, 5),
    ]
    assert p.benign == ("a blue object", "a green object") and p.mode == "softmax" and p.templates == ("{}",)
    assert p.descriptions == ["a red object", "a weapon", "a blue object", "a green object"]
    (tmp_path / "t.txt").write_text("a photo of {}\n")
    p = parse_policy(GOOD + "templates: t.txt\nmode: sigmoid\n", source=str(f))  # relative to the policy
    assert p.templates == ("a photo of {}",) and p.mode == "sigmoid"


@pytest.mark.parametrize(
    "text,match",
    [
        ("flagged: [a]\nbenign: [b]\ntreshold: 0.3\n", r"p\.yaml:3: treshold: unknown key"),
        (
            "flagged:\n  - description: x\n    threshold: high\nbenign: [b]\n",
            r"p\.yaml:3: flagged\[0\]\.threshold: expected a number",
        ),
        (
            "flagged:\n  - description: x\n    threshold: 1.5\nbenign: [b]\n",
            r"p\.yaml:3: .*probability in \(0, 1\]",
        ),
        ("flagged:\n  - threshold: 0.3\nbenign: [b]\n", r"p\.yaml:2: flagged\[0\]\.description: missing"),
        ("flagged: [a\n", r"p\.yaml:2: not valid YAML"),
        ("flagged: []\nbenign: [b]\n", r"p\.yaml:1: flagged: the list is empty"),
        ("benign: [b]\n", r"p\.yaml:1: flagged: missing"),
        ("flagged: [a]\n", r"p\.yaml:1: benign: softmax scores need at least one benign"),
        (
            "flagged: [a]\nbenign:\n  - b\n  - a\n",
            r"p\.yaml: description 'a' on line 4 repeats the one on line 1",
        ),
        ("mode: max\nflagged: [a]\nbenign: [b]\n", r"p\.yaml:1: mode: must be 'softmax' or 'sigmoid'"),
        ("flagged: [a]\nbenign: ['  ']\n", r"p\.yaml:2: benign\[0\]: empty description"),
        ("flagged: a red object\nbenign: [b]\n", r"p\.yaml:1: flagged: expected a list"),
        ("flagged: [a]\nbenign: [b]\ntemplates: ['a {} {}']\n", r"p\.yaml:3: template 'a \{\} \{\}'"),
        ("", r"p\.yaml: the policy is empty"),
    ],
)
def test_malformed_policies_name_the_line_and_key(text, match):
    with pytest.raises(PolicyError if "template" not in match else ValueError, match=match):
        parse_policy(text, source="p.yaml")


def test_sigmoid_policy_may_list_only_flagged_descriptions():
    p = parse_policy("mode: sigmoid\nflagged: [a red object]\n")
    assert p.benign == () and p.mode == "sigmoid"


def test_decision_rule_on_known_scores(tiny_model):
    policy = parse_policy(GOOD)
    mod = Moderator(tiny_model(seed=0), WordTokenizer(), policy)
    # columns: red (t=0.4), weapon (t=0.25), blue, green
    scores = torch.tensor(
        [
            [0.70, 0.05, 0.15, 0.10],  # red above its threshold -> flag, margin +0.30
            [0.30, 0.30, 0.30, 0.10],  # weapon 0.30 >= 0.25 (margin +0.05) beats red (-0.10) -> flag
            [0.35, 0.10, 0.50, 0.05],  # no flagged description reaches its threshold -> pass, best benign
        ]
    )
    flag1, flag2, passed = mod.decide(scores)
    assert flag1.flagged and flag1.decision == "flag" and flag1.matched == "a red object"
    assert flag1.score == pytest.approx(0.70) and flag1.margin == pytest.approx(0.30)
    assert flag2.flagged and flag2.matched == "a weapon" and flag2.margin == pytest.approx(0.05)
    assert not passed.flagged and passed.decision == "pass" and passed.matched == "a blue object"
    assert passed.score == pytest.approx(0.50) and passed.margin == pytest.approx(-0.05)
    assert passed.nearest_flagged == "a red object" and passed.threshold == pytest.approx(0.4)
    d = passed.to_dict()
    assert set(d) == {"decision", "matched", "score", "margin", "nearest_flagged", "threshold", "scores"}
    assert list(d["scores"]) == policy.descriptions
