"""Training: ``fit(TrainConfig.from_flat(...))``, the quickstart, WiSE-FT merging, LiT locking."""

from .config import TrainConfig
from .lit import lock_image_tower
from .loop import FitResult, fit
from .merge import interpolate_state_dicts, merge_checkpoints

__all__ = [
    "FitResult",
    "TrainConfig",
    "fit",
    "interpolate_state_dicts",
    "lock_image_tower",
    "merge_checkpoints",
]
