"""Class names, prompt templates and label lists, read from plain text files.

File format (class names, labels and templates alike): UTF-8, one entry per line; blank lines and
lines starting with ``#`` are ignored. A template holds exactly one ``{}`` (or ``{c}``) where the
class name goes (``a photo of a {}.``). Every problem is reported with the file and line number.

Built-in template sets live as data files in ``clipforge/eval/templates/`` and are named by their
stem (``default``, ``simple``, ``objects``, and OpenAI's published sets: ``imagenet1k`` (the 80
templates), ``cifar``, ``pets``, ...); built-in class-name lists in ``clipforge/eval/classnames/``
(``imagenet1k``, ``cifar10``, ``cifar100``, ``stl10``, ``pets``, ``flowers102`` ...). Any other
argument is read as a path.

The built-in files at the top of those folders are English; a set in another language is a file of the
same name in a folder named by the language's ISO 639-1 code (``templates/de/imagenet1k.txt``,
``classnames/ja/imagenet1k.txt``), chosen with ``language="de"`` (see ``templates/NOTICE.md`` for
where they come from). :func:`template_languages` / :func:`classname_languages` list a set's languages.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path

ENGLISH = "en"  # the language of the files at the top of templates/ and classnames/
_ISO_639_1 = re.compile(r"[a-z]{2}")


class PromptLanguageError(ValueError):
    """A built-in set asked for in a language it is not in. ``parameter`` is the name the message
    gives the language (``language``; a caller that took it under another name may set its own)."""

    def __init__(self, language: object, detail: str, parameter: str = "language") -> None:
        super().__init__(language, detail)
        self.language, self.detail, self.parameter = language, detail, parameter

    def __str__(self) -> str:
        return f"`{self.parameter}={self.language!r}`: {self.detail}"


def _builtin(kind: str) -> list[str]:
    folder = resources.files("clipforge.eval") / kind
    return sorted(p.name[: -len(".txt")] for p in folder.iterdir() if p.name.endswith(".txt") and p.is_file())


def _languages(kind: str, name: str) -> list[str]:
    """ISO 639-1 codes of the languages built-in set ``name`` of ``kind`` has, English first."""
    folder = resources.files("clipforge.eval") / kind
    found = sorted(
        d.name
        for d in folder.iterdir()
        if _ISO_639_1.fullmatch(d.name) and d.is_dir() and (d / f"{name}.txt").is_file()
    )
    return ([ENGLISH] if (folder / f"{name}.txt").is_file() else []) + found


@functools.cache
def _sets_by_language(kind: str) -> dict[str, tuple[str, ...]]:
    """ISO 639-1 code → the built-in sets of ``kind`` in that language, English first (read once)."""
    sets: dict[str, list[str]] = {}
    for name in _builtin(kind):
        for code in _languages(kind, name):
            sets.setdefault(code, []).append(name)
    return {code: tuple(sets[code]) for code in sorted(sets, key=lambda code: (code != ENGLISH, code))}


def template_sets_by_language() -> dict[str, list[str]]:
    """ISO 639-1 code → the built-in template sets in that language (``{"en": [...], "de": ["imagenet1k"]}``)."""
    return {code: list(names) for code, names in _sets_by_language("templates").items()}


def template_languages(name: str) -> list[str]:
    """ISO 639-1 codes of the languages built-in template set ``name`` exists in (``["en", ...]``)."""
    return _languages("templates", name)


def classname_languages(name: str) -> list[str]:
    """ISO 639-1 codes of the languages built-in class-name list ``name`` exists in (``["en", ...]``)."""
    return _languages("classnames", name)


def _in_language(kind: str, name: str, language: str | None) -> Path:
    """The built-in file of set ``name`` of ``kind`` in ``language`` (None or "en": English); a
    language that set lacks is a :class:`PromptLanguageError` listing the set's languages."""
    folder = resources.files("clipforge.eval") / kind
    if language is None or language == ENGLISH:
        return Path(str(folder / f"{name}.txt"))
    if isinstance(language, str) and _ISO_639_1.fullmatch(language) and (folder / language / f"{name}.txt").is_file():
        return Path(str(folder / language / f"{name}.txt"))
    what = "template set" if kind == "templates" else "class-name list"
    if isinstance(language, str) and _ISO_639_1.fullmatch(language):
        others = _sets_by_language(kind).get(language, ())
        also = f"; in {language}: {', '.join(others)}" if others else ""
    else:
        also = "; languages are ISO 639-1 codes, as de or ja"
    raise PromptLanguageError(
        language,
        f"the built-in {what} {name!r} is not in that language (it is in {', '.join(_languages(kind, name))}){also}",
    )


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


def load_templates(name_or_path: str | Path = "default", *, language: str | None = None) -> list[str]:
    """A built-in template set by name, or a template file (one template per line).

    ``language``: an ISO 639-1 code (``"de"``) picks the built-in set in that language (None or
    ``"en"``: English); a file is read as it is, whatever ``language``."""
    path = Path(name_or_path)
    if not path.is_file() and str(name_or_path) in builtin_templates():
        path = _in_language("templates", str(name_or_path), language)
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
    name_or_path: str | Path,
    *,
    what: str = "class names",
    allow_duplicates: bool = False,
    language: str | None = None,
) -> list[str]:
    """Class names (or labels) from a file, one per line, in order, or a built-in list by name.

    A duplicate is an error unless ``allow_duplicates`` (built-in lists allow them: OpenAI's
    ImageNet names give two pairs of classes one name, and the indices must stay those of ImageNet;
    the translated lists name some classes alike too). ``language``: an ISO 639-1 code (``"ja"``)
    picks the built-in list in that language, in the same class order (None or ``"en"``: English);
    a file is read as it is, whatever ``language``."""
    path = Path(name_or_path)
    if not path.is_file() and str(name_or_path) in builtin_classnames():
        path = _in_language("classnames", str(name_or_path), language)
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
