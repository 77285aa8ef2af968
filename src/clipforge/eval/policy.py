"""Moderation policies: YAML files listing flagged and benign descriptions with thresholds.

    # policy.yaml
    threshold: 0.5            # default for flagged descriptions (a probability in (0, 1])
    mode: softmax             # softmax: scores form a distribution over all descriptions
                              # sigmoid: independent per description (models with a logit_bias)
    templates: ["{}"]         # optional: a list, a built-in set name or a template file
    flagged:
      - a red object                          # uses the default threshold
      - description: a photo of a weapon
        threshold: 0.3
    benign:
      - a blue object
      - a green object

Every error names the file, the line and the key (``policy.yaml:7: flagged[1].threshold: ...``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .prompts import check_template, load_templates

TOP_KEYS = ("threshold", "mode", "templates", "flagged", "benign")
RULE_KEYS = ("description", "threshold")


@dataclass(frozen=True)
class FlaggedRule:
    description: str
    threshold: float
    line: int  # 1-based line in the policy file


@dataclass(frozen=True)
class Policy:
    flagged: tuple[FlaggedRule, ...]
    benign: tuple[str, ...]
    mode: Literal["softmax", "sigmoid"] = "softmax"
    templates: tuple[str, ...] = ("{}",)
    source: str = "<policy>"

    @property
    def descriptions(self) -> list[str]:
        """Flagged descriptions first, then benign ones: the label order used for scoring."""
        return [r.description for r in self.flagged] + list(self.benign)


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the line and key."""


def load_policy(path: str | Path) -> Policy:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"policy file {path}: no such file")
    return parse_policy(path.read_text(encoding="utf-8"), source=str(path))


def parse_policy(text: str, *, source: str = "<policy>") -> Policy:
    """A :class:`Policy` from YAML text; ``source`` names it in errors."""
    try:
        import yaml
    except ImportError as e:
        raise ImportError("moderation policies need PyYAML: pip install 'clipforge[eval]'") from e

    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise PolicyError(f"{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from e
    finally:
        loader.dispose()
    reader = _Reader(loader, source)
    if root is None:
        raise PolicyError(f"{source}: the policy is empty")
    top = reader.mapping(root, "policy", TOP_KEYS)

    default_threshold = 0.5
    if "threshold" in top:
        default_threshold = reader.probability(top["threshold"], "threshold")
    mode = "softmax"
    if "mode" in top:
        mode = reader.scalar(top["mode"], "mode", str)
        if mode not in ("softmax", "sigmoid"):
            raise reader.error(top["mode"], "mode", f"must be 'softmax' or 'sigmoid', got {mode!r}")
    templates: tuple[str, ...] = ("{}",)
    if "templates" in top:
        templates = reader.templates(top["templates"])

    if "flagged" not in top:
        raise reader.error(root, "flagged", "missing: the policy must list at least one flagged description")
    flagged = []
    for i, item in enumerate(reader.sequence(top["flagged"], "flagged")):
        key = f"flagged[{i}]"
        if isinstance(item, yaml.ScalarNode):
            flagged.append(FlaggedRule(reader.text(item, key), default_threshold, item.start_mark.line + 1))
            continue
        rule = reader.mapping(item, key, RULE_KEYS)
        if "description" not in rule:
            raise reader.error(item, f"{key}.description", "missing")
        threshold = default_threshold
        if "threshold" in rule:
            threshold = reader.probability(rule["threshold"], f"{key}.threshold")
        flagged.append(
            FlaggedRule(
                reader.text(rule["description"], f"{key}.description"), threshold, item.start_mark.line + 1
            )
        )
    benign = []
    if "benign" in top:
        for i, item in enumerate(reader.sequence(top["benign"], "benign", allow_empty=True)):
            benign.append((reader.text(item, f"benign[{i}]"), item))
    if not flagged:
        raise reader.error(top["flagged"], "flagged", "lists no descriptions")
    if mode == "softmax" and not benign:
        raise reader.error(
            root,
            "benign",
            "softmax scores need at least one benign description to compare against "
            "(with only flagged ones every image would match one of them)",
        )
    seen: dict[str, str] = {}
    for description, where in [(r.description, f"line {r.line}") for r in flagged] + [
        (d, f"line {node.start_mark.line + 1}") for d, node in benign
    ]:
        if description in seen:
            raise PolicyError(
                f"{source}: description {description!r} on {where} repeats the one on {seen[description]}"
            )
        seen[description] = where
    return Policy(tuple(flagged), tuple(d for d, _ in benign), mode, templates, source)


class _Reader:
    """Typed access to YAML nodes with errors that name ``source:line: key``."""

    def __init__(self, loader: Any, source: str) -> None:
        self.loader = loader
        self.source = source

    def error(self, node: Any, key: str, message: str) -> PolicyError:
        return PolicyError(f"{self.source}:{node.start_mark.line + 1}: {key}: {message}")

    def mapping(self, node: Any, key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        import yaml

        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, key, f"expected a mapping with keys {', '.join(allowed)}")
        out: dict[str, Any] = {}
        for k_node, v_node in node.value:
            name = k_node.value if isinstance(k_node, yaml.ScalarNode) else None
            where = f"{key}.{name}" if key != "policy" else str(name)
            if name not in allowed:
                raise self.error(k_node, where, f"unknown key (allowed: {', '.join(allowed)})")
            if name in out:
                raise self.error(k_node, where, "key given twice")
            out[name] = v_node
        return out

    def sequence(self, node: Any, key: str, *, allow_empty: bool = False) -> list[Any]:
        import yaml

        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, key, "expected a list (lines starting with '- ')")
        if not node.value and not allow_empty:
            raise self.error(node, key, "the list is empty")
        return list(node.value)

    def scalar(self, node: Any, key: str, kind: type) -> Any:
        import yaml

        kind_name = {float: "number", str: "string"}.get(kind, kind.__name__)
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, key, f"expected a {kind_name}")
        value = self.loader.construct_object(node)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise self.error(node, key, f"expected a {kind_name}, got {node.value!r}")
        return value

    def text(self, node: Any, key: str) -> str:
        value = self.scalar(node, key, str).strip()
        if not value:
            raise self.error(node, key, "empty description")
        return value

    def probability(self, node: Any, key: str) -> float:
        value = self.scalar(node, key, float)
        if not 0.0 < value <= 1.0:
            raise self.error(node, key, f"must be a probability in (0, 1], got {value}")
        return value

    def templates(self, node: Any) -> tuple[str, ...]:
        import yaml

        if isinstance(node, yaml.ScalarNode):  # a built-in set name, or a file relative to the policy
            name = self.scalar(node, "templates", str)
            beside = Path(self.source).parent / name
            return tuple(load_templates(beside if beside.is_file() else name))
        items = self.sequence(node, "templates")
        return tuple(
            check_template(
                self.scalar(n, f"templates[{i}]", str), where=f"{self.source}:{n.start_mark.line + 1}"
            )
            for i, n in enumerate(items)
        )
