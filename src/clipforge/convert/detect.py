"""Which kind of checkpoint a path holds: clipforge, OpenAI, open_clip, Hugging Face or Apple's MobileCLIP.

Detection looks at directory contents, file headers and parameter names; it never unpickles
anything itself. Formats whose layout is shared (OpenAI and open_clip) are told apart by OpenAI's
TorchScript container or its marker tensors; when that is not possible the caller must say which.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import is_clipforge_checkpoint
from .io import ConvertError

FORMATS = ("auto", "clipforge", "openai", "open_clip", "hf", "apple_mobileclip")
CLIPFORGE_WEIGHTS = "model.safetensors"
HF_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
)


@dataclass(frozen=True)
class Detected:
    """``format`` is final for directories and clipforge files; for other files it is ``"weights"``
    until the parameter names are read (see :func:`classify_keys`)."""

    format: str
    weights: Path | None  # the file holding the tensors (the index file for sharded HF weights)
    config: Path | None  # HF ``config.json`` or ``open_clip_config.json``


def find_clipforge_checkpoint(path: str | Path) -> Path | None:
    """``path`` itself or ``path/model.safetensors`` when that is a clipforge checkpoint, else None."""
    path = Path(path)
    candidate = path / CLIPFORGE_WEIGHTS if path.is_dir() else path
    return candidate if candidate.is_file() and is_clipforge_checkpoint(candidate) else None


def detect(path: str | Path) -> Detected:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    own = find_clipforge_checkpoint(path)
    if own is not None:
        return Detected("clipforge", own, None)
    if path.is_file():
        return Detected("weights", path, None)
    if (path / "config.json").is_file():
        weights = next((path / n for n in HF_WEIGHTS if (path / n).is_file()), None)
        if weights is None:
            raise ConvertError(
                f"{path}: a Hugging Face directory without weights (expected one of {', '.join(HF_WEIGHTS)})"
            )
        return Detected("hf", weights, path / "config.json")
    if (path / OPEN_CLIP_CONFIG).is_file():
        weights = next((path / n for n in OPEN_CLIP_WEIGHTS if (path / n).is_file()), None)
        if weights is None:
            raise ConvertError(
                f"{path}: an open_clip directory without weights (expected {OPEN_CLIP_WEIGHTS[0]})"
            )
        return Detected("open_clip", weights, path / OPEN_CLIP_CONFIG)
    raise ConvertError(
        f"{path}: a directory that holds no known checkpoint (expected a clipforge {CLIPFORGE_WEIGHTS}, "
        f"a Hugging Face config.json + weights, or an open_clip {OPEN_CLIP_CONFIG} + weights)"
    )


def classify_keys(keys: list[str] | set[str]) -> str:
    """From parameter names: ``hf``, ``openai_layout`` (OpenAI/open_clip), ``apple_mobileclip`` (Apple's
    ml-mobileclip checkpoints), ``clipforge`` or ``unknown``."""
    keys = set(keys)
    if any(k.startswith(("vision_model.", "text_model.")) for k in keys):
        return "hf"
    if any(k.startswith("image_encoder.model.") for k in keys) and any(k.startswith("text_encoder.") for k in keys):
        return "apple_mobileclip"
    if "visual.conv1.weight" in keys or any(
        k.startswith(("visual.trunk.", "visual.transformer.resblocks.")) for k in keys
    ):
        return "openai_layout"
    if any(k.startswith(("visual.patch_embed.", "visual.stem.", "text.token_embed.")) for k in keys):
        return "clipforge"
    return "unknown"
