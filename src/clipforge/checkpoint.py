"""Self-describing checkpoints: safetensors weights + JSON metadata.

A clipforge checkpoint is one ``.safetensors`` file whose header carries everything needed to use
the weights correctly: the architecture (incl. GELU vs QuickGELU), the preprocessing, the tokenizer
(settings and BPE merges) and free-form provenance. Loading checks every tensor against the config
and names the keys that do not fit, so a mismatch is an error instead of silently wrong outputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from .config import ConfigError, ModelConfig
from .fileio import atomic_write
from .models import CLIP

FORMAT = "clipforge.checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or whose tensors do not fit its model."""


class CheckpointInfo(NamedTuple):
    config: ModelConfig
    tokenizer: dict[str, Any] | None
    provenance: dict[str, Any]


def save_checkpoint(
    path: str | Path,
    model: CLIP,
    *,
    tokenizer: Any | None = None,
    provenance: dict[str, Any] | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``model`` (and its tokenizer) atomically to ``path`` (a ``.safetensors`` file).
    ``state_dict`` replaces ``model.state_dict()`` (e.g. LoRA adapters merged into plain weights)."""
    from safetensors.torch import save_file

    path = Path(path)
    metadata = {
        "format": FORMAT,
        "config": model.config.to_json(),
        "provenance": json.dumps(provenance or {}, sort_keys=True, default=str),
    }
    if tokenizer is not None:
        metadata["tokenizer"] = json.dumps(tokenizer.to_metadata())
    weights = model.state_dict() if state_dict is None else state_dict
    state = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
    return atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))


def read_checkpoint_info(path: str | Path) -> CheckpointInfo:
    """Read only the metadata of a clipforge checkpoint (no tensors)."""
    meta = _read_header(Path(path))
    try:
        raw_config = parse_json(meta["config"], source=str(path), what="model config")
        if not isinstance(raw_config, dict):
            raise ConfigError(f"the model config is a JSON {type(raw_config).__name__}, not an object")
        config = ModelConfig.from_dict(raw_config)
        tokenizer = parse_json(meta["tokenizer"], source=str(path), what="tokenizer") if "tokenizer" in meta else None
        provenance = parse_json(meta.get("provenance", "{}"), source=str(path), what="provenance")
    except (ConfigError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: invalid clipforge metadata: {e}") from e
    return CheckpointInfo(config, tokenizer, provenance)


def load_weights(path: str | Path, *, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        weights = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read safetensors weights: {e}") from e
    if not weights:
        raise no_tensors(path)
    return weights


def _aligned(t: torch.Tensor, alignment: int = 64) -> torch.Tensor:
    """``t``, or a copy in memory from torch's own allocator where its data is not ``alignment``-byte
    aligned. safetensors hands CPU tensors whose data may start at any byte; a model holding them
    (loaded with ``assign``) ran different oneDNN kernels than a freshly built one, so that one-thread
    convolutions of a reloaded FastViT differed from the saved model's in the last bit."""
    return t if t.device.type != "cpu" or t.data_ptr() % alignment == 0 else t.clone()


def no_tensors(path: str | Path) -> CheckpointError:
    """The error for a safetensors file whose header holds metadata only."""
    return CheckpointError(f"{path}: a safetensors file without tensors (its header holds only metadata): no weights")


def load_state_dict_strict(
    model: nn.Module, state: dict[str, torch.Tensor], *, source: str = "checkpoint", assign: bool = False
) -> None:
    """Copy ``state`` into ``model``; any missing, unexpected or mis-shaped tensor is an error naming it.

    With ``assign`` the tensors replace the model's own (no copy, except of a CPU tensor whose data
    is not 64-byte aligned): use it for a model built on the meta device, whose random
    initialisation is then never computed."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: {tuple(state[k].shape)} in {source}, {tuple(v.shape)} in model"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} tensor(s): {_short(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es): {_short(shapes)}")
    if problems:
        raise CheckpointError(f"{source} does not fit the model config: " + "; ".join(problems))
    if assign:
        state = {k: _aligned(t) for k, t in state.items()}
    model.load_state_dict(state, strict=True, assign=assign)


def load_checkpoint(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> tuple[CLIP, CheckpointInfo]:
    """The model stored at ``path`` (eval mode) and its metadata."""
    info = read_checkpoint_info(path)
    with torch.device("meta"):  # skip the random initialisation the weights would overwrite
        model = CLIP(info.config)
    load_state_dict_strict(model, load_weights(path), source=str(path), assign=True)
    model = model.to(device=device, dtype=dtype).eval()
    return model, info


def is_clipforge_checkpoint(path: str | Path) -> bool:
    try:
        return _read_header(Path(path)).get("format") == FORMAT
    except CheckpointError:
        return False


# Most JSON values parse_json builds (each costs ~80 bytes as a Python object, ~10x its text): a
# model's header has ~10 per tensor, so this is ~50,000 tensors (CLIP ViT-bigG-14 has ~1,200).
MAX_JSON_VALUES = 500_000


def parse_json(raw: bytes | str, *, source: str, what: str = "header") -> object:
    """JSON from an untrusted file, every failure a :class:`CheckpointError` naming ``source``:
    malformed text, bad UTF-8, nesting deep enough to exhaust the parser (RecursionError), and more
    than ``MAX_JSON_VALUES`` values (counted from the text before parsing, so memory stays bounded)."""
    check_json_size(raw, source=source, what=what)
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{source}: invalid JSON {what} ({e})") from e
    except RecursionError:
        raise CheckpointError(f"{source}: JSON {what} nested too deeply to be a checkpoint's") from None


def check_json_size(raw: bytes | str, *, source: str, what: str = "header") -> None:
    """Refuse JSON text that could hold more than ``MAX_JSON_VALUES`` values, before parsing it."""
    marks = (",", "[", "{") if isinstance(raw, str) else (b",", b"[", b"{")
    values = 1 + sum(raw.count(m) for m in marks)  # >= the values in it (each after a comma or an opening)
    if values > MAX_JSON_VALUES:
        raise CheckpointError(
            f"{source}: JSON {what} of up to {values:,} values, more than a checkpoint's ({MAX_JSON_VALUES:,}); "
            "not read"
        )


MAX_SAFETENSORS_HEADER = 100_000_000  # bytes; safetensors itself refuses larger headers


def safetensors_header_length(head: bytes) -> int | None:
    """The header length a safetensors file's first 8 bytes declare (little-endian), or None when
    they are too few or the length is implausible."""
    n = int.from_bytes(head[:8], "little") if len(head) >= 8 else 0
    return n if 0 < n <= MAX_SAFETENSORS_HEADER else None


def read_safetensors_header(path: str | Path) -> dict:
    """The JSON header of a safetensors file (tensor entries and ``__metadata__``), checked."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: not a safetensors file (too short)")
        n = safetensors_header_length(head)
        if n is None or n + 8 > path.stat().st_size:
            raise CheckpointError(f"{path}: not a safetensors file (bad header length)")
        raw = f.read(n)
    check_json_size(raw, source=str(path), what="safetensors header")
    text = _utf8(raw, source=path)
    del raw  # dropped before parsing: the peak is about twice the header, whatever it holds
    header = parse_json(text, source=str(path), what="safetensors header")
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__") or {}, dict):
        raise CheckpointError(f"{path}: not a safetensors file (the header is not a JSON object)")
    return header


def _utf8(raw: bytes, *, source: Path) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{source}: invalid JSON safetensors header ({e})") from None


def _read_header(path: Path) -> dict[str, str]:
    meta = read_safetensors_header(path).get("__metadata__") or {}
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: a safetensors file but not a clipforge checkpoint (no {FORMAT!r} metadata)")
    return meta


def _short(items: list[str], n: int = 8) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")
