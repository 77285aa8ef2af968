"""Class names, prompt templates and label lists, read from plain text files.

File format (class names, labels and templates alike): UTF-8, one entry per line; blank lines and
lines starting with ``#`` are ignored. A template holds exactly one ``{}`` (or ``{c}``) where the
class name goes (``a photo of a {}.``). Every problem is reported with the file and line number.

Built-in template sets live as data files in ``clipforge/eval/templates/`` and are named by their
stem (``default``, ``simple``, ``objects``, and OpenAI's published sets: ``imagenet1k`` (the 80
templates), ``cifar``, ``pets``, ...); built-in class-name lists in ``clipforge/eval/classnames/``
(``imagenet1k``, ``cifar10``, ``cifar100``, ``stl10``, ``pets``, ``flowers102`` ...). Any other
argument is read as a path.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def _builtin(kind: str) -> list[str]:
    folder = resources.files("clipforge.eval") / kind
    return sorted(p.name[: -len(".txt")] for p in folder.iterdir() if p.name.endswith(".txt"))


def builtin_templates() -> list[str]:
    """Names of the template sets shipped with clipforge."""
    return _builtin("templates")


def builtin_classnames() -> list[str]:
    """Names of the class-name lists shipped with clipforge (``imagenet1k``, ``cifar100`` ...)."""
    return _builtin("classnames")


def read_entries(path: str | Path, *, what: str) -> list[tuple[int, str]]:
    """(line number, stripped text) of each non-blank, non-comment line of ``path``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} file {path}: not UTF-8 text ({e})") from e
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            entries.append((number, line))
    if not entries:
        raise ValueError(f"{what} file {path}: no entries (only blank or '#' lines)")
    return entries


def check_template(template: str, *, where: str) -> str:
    """``template`` if it has exactly one ``{}`` or ``{c}`` and no other braces; else a ValueError
    naming ``where``."""
    count = template.count("{}") + template.count("{c}")
    stray = template.replace("{}", "").replace("{c}", "")
    if count != 1 or "{" in stray or "}" in stray:
        raise ValueError(
            f"{where}: template {template!r} must contain exactly one '{{}}' for the class name and no other braces"
        )
    return template


def load_templates(name_or_path: str | Path = "default") -> list[str]:
    """A built-in template set by name, or a template file (one template per line)."""
    path = Path(name_or_path)
    if not path.is_file() and str(name_or_path) in builtin_templates():
        path = Path(str(resources.files("clipforge.eval") / "templates" / f"{name_or_path}.txt"))
    elif not path.is_file():
        raise FileNotFoundError(
            f"template file {name_or_path}: no such file, and not a built-in set ({', '.join(builtin_templates())})"
        )
    entries = read_entries(path, what="template")
    return [check_template(t, where=f"{path}:{n}") for n, t in entries]


def check_templates(templates: list[str], *, source: str = "templates") -> list[str]:
    """Validate an in-memory template list (``source`` names it in errors)."""
    if not templates:
        raise ValueError(f"{source}: the template list is empty")
    return [check_template(t, where=f"{source}[{i}]") for i, t in enumerate(templates)]


def load_classnames(
    name_or_path: str | Path, *, what: str = "class names", allow_duplicates: bool = False
) -> list[str]:
    """Class names (or labels) from a file, one per line, in order, or a built-in list by name.

    A duplicate is an error unless ``allow_duplicates`` (built-in lists allow them: OpenAI's
    ImageNet names give two pairs of classes one name, and the indices must stay those of ImageNet)."""
    path = Path(name_or_path)
    if not path.is_file() and str(name_or_path) in builtin_classnames():
        path = Path(str(resources.files("clipforge.eval") / "classnames" / f"{name_or_path}.txt"))
        allow_duplicates = True
    seen: dict[str, int] = {}
    names = []
    for number, name in read_entries(path, what=what):
        if name in seen and not allow_duplicates:
            raise ValueError(f"{path}:{number}: duplicate entry {name!r} (first on line {seen[name]})")
        seen.setdefault(name, number)
        names.append(name)
    return names


def parse_labels(text: str) -> list[str]:
    """Comma-separated labels (``"cat, dog,bird"``) → a checked list."""
    return check_labels(text.split(","))


def check_labels(labels: list[str], *, source: str = "labels") -> list[str]:
    """Stripped labels; an empty list, an empty label or a duplicate is a ValueError."""
    cleaned = [str(label).strip() for label in labels]
    if not cleaned or all(not label for label in cleaned):
        raise ValueError(f"{source}: the label list is empty")
    for i, label in enumerate(cleaned):
        if not label:
            raise ValueError(f"{source}: label {i + 1} is empty")
        if cleaned.index(label) != i:
            raise ValueError(f"{source}: duplicate label {label!r}")
    return cleaned
