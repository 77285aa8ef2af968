"""WiSE-FT: interpolate the weights of two checkpoints of the same architecture.

``merged = (1 - alpha) * A + alpha * B`` tensor by tensor (Wortsman et al., 2022: A the zero-shot
model, B its fine-tuned version). ``alpha = 0`` returns A's tensors and ``alpha = 1`` B's, exactly.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import CheckpointError, save_checkpoint
from ..inference import LazyTokenizer, load_model
from ..tokenizer import Tokenizer


def interpolate_state_dicts(
    a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], *, alpha: float
) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * a + alpha * b`` for every tensor; the two must hold the same keys and shapes.

    Floating tensors are mixed in float32 (float64 stays float64) and cast back; integer tensors
    (e.g. BatchNorm's ``num_batches_tracked``) are taken from ``a`` when ``alpha < 0.5``, else ``b``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise ValueError(
            f"the checkpoints hold different tensors: only in A {only_a[:5]}, only in B {only_b[:5]}"
        )
    out = {}
    for key, ta in a.items():
        tb = b[key]
        if ta.shape != tb.shape:
            raise ValueError(f"{key}: shape {tuple(ta.shape)} in A but {tuple(tb.shape)} in B")
        if alpha == 0.0:
            out[key] = ta.clone()
        elif alpha == 1.0:
            out[key] = tb.clone()
        elif not ta.is_floating_point():
            out[key] = (ta if alpha < 0.5 else tb).clone()
        else:
            work = torch.promote_types(ta.dtype, torch.float32)
            mixed = torch.lerp(ta.to(work), tb.to(device=ta.device, dtype=work), alpha)
            out[key] = mixed.to(ta.dtype)
    return out


@torch.no_grad()
def wise_ft_into(model: torch.nn.Module, start: dict[str, torch.Tensor], *, alpha: float) -> None:
    """Replace ``model``'s weights by ``(1 - alpha) * start + alpha * model`` (WiSE-FT at the end
    of a fine-tune; ``start`` the starting weights)."""
    merged = interpolate_state_dicts(start, model.state_dict(), alpha=alpha)
    model.load_state_dict(merged, strict=True)


def merge_checkpoints(a: str | Path, b: str | Path, *, alpha: float, out: str | Path) -> Path:
    """Write the WiSE-FT interpolation of models ``a`` and ``b`` (any model references) to ``out``,
    with their shared tokenizer; a different architecture or tokenizer is an error."""
    loaded_a = load_model(a, device="cpu", precision="fp32", progress=False)
    loaded_b = load_model(b, device="cpu", precision="fp32", progress=False)
    model_a, model_b = loaded_a.model, loaded_b.model
    if model_a.config.replace(name="") != model_b.config.replace(name=""):
        raise CheckpointError(f"{a} and {b} have different architectures; only the same model can be merged")
    if _tokenizer_metadata(loaded_a.tokenizer) != _tokenizer_metadata(loaded_b.tokenizer):
        raise CheckpointError(f"{a} and {b} use different tokenizers; merging them would give garbage")
    merged = interpolate_state_dicts(model_a.state_dict(), model_b.state_dict(), alpha=alpha)
    model_a.load_state_dict(merged, strict=True)
    provenance = {"merged_from": [str(a), str(b)], "alpha": alpha, "method": "wise-ft"}
    tokenizer = None if _tokenizer_metadata(loaded_a.tokenizer) is None else loaded_a.tokenizer
    return save_checkpoint(out, model_a, tokenizer=tokenizer, provenance=provenance)


def _tokenizer_metadata(tokenizer: Tokenizer | LazyTokenizer) -> dict | None:
    """What a checkpoint records of its tokenizer (None: it records none)."""
    return tokenizer.metadata if isinstance(tokenizer, LazyTokenizer) else tokenizer.to_metadata()
