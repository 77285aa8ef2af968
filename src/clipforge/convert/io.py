"""Safe reading of foreign checkpoint files into a flat ``{name: tensor}`` state dict.

Nothing from a checkpoint is executed: safetensors files hold no code, PyTorch pickles are read with
``torch.load(weights_only=True)`` (its restricted unpickler builds only tensors and containers), and
TorchScript archives go through :mod:`.torchscript`, which never compiles or runs their code.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import CheckpointError, no_tensors, read_safetensors_header, safetensors_header_length
from .torchscript import ArchiveError, is_torchscript_archive, read_torchscript_tensors

StateDict = dict[str, torch.Tensor]

# Prefixes that wrappers add to every key: DDP (``module.``) and ``torch.compile`` (``_orig_mod.``).
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class ConvertError(CheckpointError):
    """A source checkpoint that cannot be read or mapped onto a clipforge model."""


def sniff(path: str | Path) -> str:
    """A file's container: ``safetensors``, ``torchscript``, ``torch_zip``, ``pickle`` or ``unknown``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(9)
    if head[8:9] == b"{" and safetensors_header_length(head) is not None:  # a JSON header follows
        return "safetensors"
    if head[:4] == b"PK\x03\x04":
        return "torchscript" if is_torchscript_archive(path) else "torch_zip"
    if head[:1] == b"\x80":  # pickle protocol 2+ (PyTorch's legacy, non-zip format)
        return "pickle"
    return "unknown"


def read_tensors(path: str | Path) -> tuple[StateDict, str]:
    """A checkpoint file's tensors, unwrapped from ``{"state_dict": ...}`` and any ``module.`` prefix.

    Returns ``(state_dict, kind)`` with ``kind`` from :func:`sniff`. Raises :class:`ConvertError`
    naming the file for truncated, corrupt or unsafe files and for files that are not checkpoints.
    """
    path = Path(path)
    kind = sniff(path)
    if kind == "safetensors":
        obj: Any = _read_safetensors(path)
    elif kind == "torchscript":
        check_zip_sizes(path)
        try:
            obj = read_torchscript_tensors(path)
        except ArchiveError as e:
            raise ConvertError(str(e)) from e
    elif kind in ("torch_zip", "pickle"):
        obj = _torch_load(path)
    else:
        raise ConvertError(
            f"{path}: not a checkpoint (expected a .safetensors file, a PyTorch .pt/.bin/.pth file or a "
            "TorchScript archive)"
        )
    return _flatten(obj, path), kind


def strip_prefix(sd: StateDict) -> StateDict:
    """Drop a wrapper prefix (``module.``, ``_orig_mod.``) shared by every key."""
    changed = True
    while changed and sd:
        changed = False
        for p in _WRAPPER_PREFIXES:
            if all(k.startswith(p) for k in sd):
                sd = {k[len(p) :]: v for k, v in sd.items()}
                changed = True
    return sd


def _read_safetensors(path: Path) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        header = read_safetensors_header(path)  # checked in Python first: clear errors for hostile headers
    except CheckpointError as e:
        raise ConvertError(str(e)) from e
    if not header.keys() - {"__metadata__"}:
        raise ConvertError(str(no_tensors(path)))
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ConvertError(f"{path}: cannot read safetensors file (truncated or corrupt?): {e}") from e


MAX_INFLATION = 4  # a PyTorch zip stores tensors uncompressed: its content is about its size
ZIP_SLACK_BYTES = 64 * 1024 * 1024


def check_zip_sizes(path: str | Path) -> None:
    """Refuse a zip whose members *declare* far more bytes than the file holds (a zip bomb),
    before anything is inflated. PyTorch and TorchScript archives store tensors uncompressed."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ConvertError(f"{path}: cannot read zip archive (truncated or corrupt?): {e}") from e
    size = path.stat().st_size
    declared = sum(i.file_size for i in infos)
    if declared > MAX_INFLATION * size + ZIP_SLACK_BYTES:
        biggest = max(infos, key=lambda i: i.file_size)
        raise ConvertError(
            f"{path}: refused: its members would inflate to {declared:,} bytes from a {size:,}-byte file "
            f"({biggest.filename!r}: {biggest.file_size:,} bytes) — a zip bomb, not a checkpoint"
        )


def _torch_load(path: Path) -> Any:
    if zipfile.is_zipfile(path):
        check_zip_sizes(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConvertError(
            f"{path}: refused to unpickle: the file holds objects other than tensors and containers, "
            f"which could run code when loaded. Nothing was executed. ({first})"
        ) from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise ConvertError(f"{path}: cannot read PyTorch file (truncated or corrupt?): {e}") from e


def _flatten(obj: Any, path: Path) -> StateDict:
    """Unwrap ``{"state_dict": sd}`` (training checkpoints) and check every value is a tensor."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise ConvertError(f"{path}: expected a state dict (name -> tensor), got {type(obj).__name__}")
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ConvertError(
            f"{path}: not a state dict: {len(bad)} entr{'y is' if len(bad) == 1 else 'ies are'} not tensors "
            f"({', '.join(bad[:6])}{', ...' if len(bad) > 6 else ''})"
        )
    return strip_prefix({str(k): v for k, v in obj.items()})
