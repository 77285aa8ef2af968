"""Optional third-party packages: one place that imports them and says how to install them."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtra(ImportError):
    """An optional package is not installed; the message names the ``pip install`` that fixes it."""


def require(module: str, *, extra: str, purpose: str, package: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtra` with a one-line install hint, e.g.
    ``require("wandb", extra="wandb", purpose="`report_to=wandb`")``."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        name = package or module.split(".")[0]
        raise MissingExtra(
            f"{purpose} needs {name}, which is not installed ({e}): pip install 'clipforge[{extra}]'"
        ) from e
