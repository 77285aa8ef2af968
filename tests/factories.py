"""The test suite's one tiny-model factory, as plain functions and as pytest fixtures.

``tests/conftest.py`` loads this module as a plugin (``pytest_plugins``), so tests ask for the
fixtures by name::

    def test_something(tiny_model_config, tiny_model):
        cfg = tiny_model_config("RN50", context_length=24)
        model = tiny_model("ViT-B-16-SigLIP", seed=0)

Helper modules, module-scoped fixtures and child processes that cannot take fixtures import the same
functions: ``from factories import tiny_model``. A fixture and the function it hands out share a
name and are the same callable.

Every registered architecture (:func:`clipforge.models.list_models`) shrinks to test size keeping
its structure (tower kinds, patch size, pooling, causal or bidirectional text, activation,
projection, logit bias), so tests about architectures take the ``architecture`` fixture (or
parametrise over :func:`distinct_architectures`) instead of hand-picked names. Several registered
names shrink to the same tiny model (all ResNets; the SigLIP resolutions); those run once.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import pytest
import torch

from clipforge.config import ModelConfig
from clipforge.models import CLIP, get_model_config, list_models

ARCHITECTURES: list[str] = list_models()
"""Every registered architecture name, in the registry's order (test ids)."""


def tiny_model_config(
    arch: str = "vit-tiny",
    /,
    *,
    image_size: int | None = None,
    context_length: int | None = None,
    vocab_size: int | None = None,
    vision: Mapping[str, Any] | None = None,
    text: Mapping[str, Any] | None = None,
    **fields: Any,
) -> ModelConfig:
    """The registered architecture ``arch`` (a :func:`list_models` name) shrunk to test size.

    The shrink keeps everything that makes the architecture what it is and replaces only sizes: a
    ViT gets 2 x 2 patches (``image_size = 2 * patch_size``), width 32, 2 layers of 16-wide heads;
    a ResNet gets 64 px images, width 8, one block per stage; a FastViT one block per stage, width 8,
    images giving a 2 x 2 final map; the text tower gets 16 tokens, a
    64-id vocabulary, width 32, 2 layers of 16-wide heads; the embedding is 24-d (or the image
    tower's width where the tower has no projection, as SigLIP's).

    Overrides, applied after the shrink: ``image_size``, ``context_length`` and ``vocab_size``
    (the sizes tests most often pin), ``vision`` / ``text`` (any other tower fields, as
    mappings), and any :class:`ModelConfig` field as a keyword (``embed_dim``, ``act``,
    ``init_logit_bias``, ``name``...; the config keeps ``arch`` as its name unless given). An
    unprojected image tower's ``embed_dim`` follows its width unless ``embed_dim`` is given. The
    result is validated.
    """
    cfg = get_model_config(arch)
    v = cfg.vision
    if v.kind == "vit":
        v = dataclasses.replace(v, image_size=2 * v.patch_size, width=32, layers=2, head_width=16)
    elif v.kind == "fastvit":  # keeps its stage count: one block each, a 2 x 2 final map
        n = len(v.layers)
        v = dataclasses.replace(v, image_size=2 ** (n + 2), width=8, layers=(1,) * n, head_width=16)
    else:
        v = dataclasses.replace(v, image_size=64, width=8, layers=(1, 1, 1, 1), head_width=16)
    # The text tower keeps its kind (causal or not, pooling, projection bias); only its size shrinks.
    t = dataclasses.replace(cfg.text, context_length=16, vocab_size=64, width=32, layers=2, head_width=16)
    v = dataclasses.replace(v, **({} if image_size is None else {"image_size": image_size}), **(vision or {}))
    t_changes = {"context_length": context_length, "vocab_size": vocab_size}
    t = dataclasses.replace(t, **{k: x for k, x in t_changes.items() if x is not None}, **(text or {}))
    if t.kind == "roberta" and "max_positions" not in (text or {}):  # an encoder's position table: just enough
        t = dataclasses.replace(t, max_positions=t.context_length + (t.pad_id or 0) + 1)
    if "embed_dim" not in fields:
        fields["embed_dim"] = 24 if v.kind != "vit" or v.project else v.width  # no projection: the width
    return cfg.replace(vision=v, text=t, **fields)


def tiny_model(arch: str = "vit-tiny", /, *, seed: int | None = None, train: bool = False, **overrides: Any) -> CLIP:
    """A randomly initialised :class:`CLIP` of ``tiny_model_config(arch, **overrides)``.

    ``seed`` reseeds torch's global RNG first (equal seeds, equal weights); ``None`` draws from the
    RNG as it stands (the suite's autouse fixture seeds it with 0 before every test). The model is
    in eval mode unless ``train``.
    """
    if seed is not None:
        torch.manual_seed(seed)
    return CLIP(tiny_model_config(arch, **overrides)).train(train)


class TinyConfigFactory(Protocol):
    def __call__(self, arch: str = "vit-tiny", /, **overrides: Any) -> ModelConfig: ...


class TinyModelFactory(Protocol):
    def __call__(
        self, arch: str = "vit-tiny", /, *, seed: int | None = None, train: bool = False, **overrides: Any
    ) -> CLIP: ...


@pytest.fixture(name="tiny_model_config", scope="session")
def _tiny_model_config_fixture() -> TinyConfigFactory:
    """:func:`tiny_model_config`: ``tiny_model_config("RN50", vocab_size=80)`` -> a test-size config."""
    return tiny_model_config


@pytest.fixture(name="tiny_model", scope="session")
def _tiny_model_fixture() -> TinyModelFactory:
    """:func:`tiny_model`: ``tiny_model("ViT-B-32", seed=0)`` -> a test-size model in eval mode."""
    return tiny_model


def structure(cfg: ModelConfig) -> str:
    """What a config builds, sizes aside: tower kinds, pooling, causal or not, activation, biases and
    norms present, preprocessing modes (every field but the numbers; a logit bias counts as
    present or absent)."""

    def strip(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return None if all(isinstance(v, int | float) for v in x) else [strip(v) for v in x]
        return None if isinstance(x, int | float) and not isinstance(x, bool) else x

    data = strip(cfg.to_dict())
    data["init_logit_bias"] = cfg.init_logit_bias is not None
    data["name"] = None
    return json.dumps(data, sort_keys=True)


def distinct_architectures(keep: Callable[[ModelConfig], bool] = lambda cfg: True, *, by: str = "config") -> list[str]:
    """The first name (registry order) of each group of architectures whose tiny configs are equal but
    for the name (``by="config"``: the SigLIP ``-256``/``-384``/``-512`` variants shrink to one model)
    or share a :func:`structure` (``by="structure"``: ResNet, class-token ViT, SigLIP's ViT...), for
    tests too costly to repeat on alike models. ``keep`` filters on the tiny config first."""
    key = {"config": lambda cfg: cfg.replace(name="").to_json(), "structure": structure}[by]
    seen: dict[str, str] = {}
    for name in ARCHITECTURES:
        cfg = tiny_model_config(name)
        if keep(cfg):
            seen.setdefault(key(cfg), name)
    return list(seen.values())


TINY_ARCHITECTURES: list[str] = distinct_architectures()
"""One name per distinct tiny model: :data:`ARCHITECTURES` less the names whose shrunk config equals an
earlier one's (``RN101`` stands for every ResNet, ``ViT-B-16-SigLIP`` for its -256/-384/-512 and
SigLIP 2 twins...): the same test on an equal model would repeat itself."""


@pytest.fixture(params=TINY_ARCHITECTURES)
def architecture(request: pytest.FixtureRequest) -> str:
    """Each distinct tiny architecture's name in turn (:data:`TINY_ARCHITECTURES`): a test taking
    this fixture runs once per name, and a newly registered architecture joins by itself."""
    return request.param
