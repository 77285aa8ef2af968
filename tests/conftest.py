"""Suite-wide fixtures. The tiny-model factory lives in ``factories.py``, loaded here as a plugin."""

import pytest
import torch

pytest_plugins = ["factories"]


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from torch's global RNG seeded with 0."""
    torch.manual_seed(0)


@pytest.fixture
def isolated_caches(tmp_path, monkeypatch) -> None:
    """Empty clipforge and Hugging Face Hub caches under ``tmp_path``, and no network (Hub offline)."""
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cf-cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def shapes_model(tmp_path_factory):
    """A tiny ViT trained on the built-in shapes data, once per session (``evalkit.train_shapes_model``,
    76 s on a quiet 2-core machine: its users are marked slow): (checkpoint path, the training loop's
    final evaluation dict)."""
    from evalkit import train_shapes_model

    return train_shapes_model(tmp_path_factory.getbasetemp() / "evalkit-shapes-model")
