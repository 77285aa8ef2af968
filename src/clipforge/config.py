"""Typed, strict model configuration.

Every architecture is described by a :class:`ModelConfig`: an image tower (:class:`VisionConfig`),
a text tower (:class:`TextConfig`), the shared embedding size, the activation, the temperature
initialisation and the preprocessing the image tower was trained with (:class:`PreprocessConfig`).
Configs round-trip through plain JSON dicts; an unknown or misspelt key is an error, never ignored.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

Activation = Literal["gelu", "quick_gelu", "gelu_tanh", "relu"]
ACTIVATIONS = ("gelu", "quick_gelu", "gelu_tanh")  # a model's; "relu" is only M2M100 text blocks' own
ENCODER_KINDS = ("roberta", "m2m100")  # the bidirectional encoder text towers (models/text_encoder.py)


class ConfigError(ValueError):
    """A configuration that cannot describe a valid model."""


@dataclass(frozen=True)
class VisionConfig:
    """Image tower. ``kind="vit"`` uses ``patch_size`` and an int ``layers``; ``kind="resnet"``
    (OpenAI's ModifiedResNet) uses four stage depths in ``layers`` and ``width`` as the stem width.

    ViT variants: ``pool="cls"`` (OpenAI) prepends a class token and reads it; ``pool="map"``
    (SigLIP) has no class token and pools the patch tokens with multi-head attention pooling (a
    learned probe attending over them, then an MLP). ``norm_pre`` is OpenAI's LayerNorm before the
    blocks, ``patch_bias`` a bias on the patch embedding, and ``project=False`` drops the final
    projection (then ``embed_dim`` must equal ``width``). ``patch_dropout`` (FLIP) drops that share of
    the patch tokens, at random per image, in training mode only (the class token is kept).

    EVA-CLIP / PE-Core options (all off by default):
    ``class_token`` prepends a class token also under ``pool="map"`` (PE-Core: the attention pool
    then reads it with the patches; ``None`` means "only with ``pool='cls'``"). ``pool_heads`` is the
    attention pool's head count (0: the blocks' ``heads``). ``rope`` adds 2-D rotary position
    embedding to every block's queries and keys of the patch tokens (a class token is not rotated):
    each head's channels are split in two halves of ``head_width / 4`` frequency pairs, one per
    grid axis, ``rope_axes="hw"`` rows first (EVA-02) or ``"wh"`` columns first (PE-Core);
    positions are ``index + rope_offset``, rescaled so the grid spans ``rope_ref_grid`` positions
    (0: no rescaling), with frequencies ``rope_theta ** (-j / (head_width / 4))``. ``mlp="swiglu"``
    is a SiLU-gated MLP (``fc2(silu(fc1_gate x) * fc1 x)``, hidden ``width * mlp_ratio``);
    ``sub_ln`` adds a LayerNorm inside each block's attention (before the output projection) and MLP
    (before ``fc2``). ``proj_bias`` adds a bias to the image projection; ``norm_eps`` overrides the
    model's LayerNorm epsilon in this tower (EVA's image tower 1e-6, its text tower 1e-5).

    MobileCLIP-B options: ``stem="conv"`` replaces the patch convolution by a three-conv stem (4 x 4
    stride 4 to ``width / 4`` channels, BatchNorm, GELU; 2 x 2 stride 2, BatchNorm, GELU; 2 x 2
    stride 2 to ``width`` with a bias: 16-pixel patches); ``class_pos=False`` adds the position
    embedding to the patch tokens only, before the class token is prepended.

    ``kind="fastvit"`` is MobileCLIP's FastViT / MCi tower (:mod:`clipforge.models.fastvit`): a
    MobileOne stem of ``width`` channels, one stage per entry of ``layers`` (its block count), stage
    ``i`` ``width * 2**i`` channels wide and, from the second on, entered by a stride-2 large-kernel
    patch embedding (with squeeze-excite in the last ``se_stages``). The last ``attention_stages``
    stages start with a conditional positional encoding (RepCPE) and use self-attention blocks
    (``head_width`` channels per head, normalised by ``attention_norm``); the others RepMixer
    blocks. MLPs are ``mlp_ratio`` wide. A MobileOne conv to twice the last width, average pooling and
    a biased projection end it. ``stem_scale_branch`` is the stem's 1x1 train-time branch (MCi0-2
    have it, MCi3/4 not). ``reparameterized`` says the train-time branches are folded into single
    convolutions (the inference form, see ``CLIP.reparameterize``)."""

    kind: Literal["vit", "resnet", "fastvit"] = "vit"
    image_size: int = 224
    width: int = 768
    layers: int | tuple[int, ...] = 12
    patch_size: int = 32
    head_width: int = 64
    mlp_ratio: float = 4.0
    pool: Literal["cls", "map"] = "cls"
    norm_pre: bool = True
    patch_bias: bool = False
    project: bool = True
    patch_dropout: float = 0.0
    class_token: bool | None = None
    pool_heads: int = 0
    rope: bool = False
    rope_axes: Literal["hw", "wh"] = "hw"
    rope_offset: float = 0.0
    rope_ref_grid: int = 0
    rope_theta: float = 10000.0
    mlp: Literal["plain", "swiglu"] = "plain"
    sub_ln: bool = False
    proj_bias: bool = False
    norm_eps: float | None = None
    stem: Literal["patch", "conv"] = "patch"
    class_pos: bool = True
    attention_stages: int = 0
    se_stages: int = 0
    attention_norm: Literal["batch", "layer"] = "batch"
    stem_scale_branch: bool = True
    reparameterized: bool = False

    @property
    def has_class_token(self) -> bool:
        return self.pool == "cls" if self.class_token is None else self.class_token

    @property
    def uses_family_options(self) -> bool:
        """Any option beyond OpenAI's and SigLIP's ViTs (the EVA-CLIP / PE-Core building blocks)."""
        return (
            self.class_token is not None or self.pool_heads != 0 or self.rope or self.mlp != "plain"
            or self.sub_ln or self.proj_bias or self.norm_eps is not None or self.stem != "patch" or not self.class_pos
        )  # fmt: skip

    @property
    def heads(self) -> int:
        # A ResNet's attention pool works on the last stage's 32 * width channels.
        dim = self.width * 32 if self.kind == "resnet" else self.width
        return dim // self.head_width

    @property
    def uses_fastvit_options(self) -> bool:
        return (
            self.attention_stages != 0 or self.se_stages != 0 or self.attention_norm != "batch"
            or not self.stem_scale_branch or self.reparameterized
        )  # fmt: skip

    def validate(self) -> None:
        if self.kind not in ("vit", "resnet", "fastvit"):
            raise ConfigError(f"vision.kind must be 'vit', 'resnet' or 'fastvit', got {self.kind!r}")
        if self.kind != "fastvit" and self.uses_fastvit_options:
            raise ConfigError(
                "vision.attention_stages/se_stages/attention_norm/stem_scale_branch/reparameterized are "
                "FastViT options (vision.kind='fastvit'); leave them unset"
            )
        if self.kind == "fastvit":
            self._validate_fastvit()
            return
        if not 0.0 <= self.patch_dropout < 1.0:
            raise ConfigError(f"vision.patch_dropout must be in [0, 1), got {self.patch_dropout!r}")
        if self.kind == "resnet" and self.patch_dropout:
            raise ConfigError("vision.patch_dropout drops ViT patch tokens; a ResNet image tower has none")
        if self.rope and self.patch_dropout:  # the rotary tables are laid out over the whole grid
            raise ConfigError("vision.patch_dropout is not supported with vision.rope (EVA-02 / PE-Core towers)")
        if self.kind == "vit":
            if not isinstance(self.layers, int):
                raise ConfigError("vision.layers must be an int for a ViT")
            if self.pool not in ("cls", "map"):
                raise ConfigError(f"vision.pool must be 'cls' or 'map', got {self.pool!r}")
            # SigLIP's So400m/14 runs at 384 px: its patch convolution drops the last 384 % 14 pixels.
            if self.image_size % self.patch_size and self.pool == "cls":
                raise ConfigError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
            if self.image_size < self.patch_size:
                raise ConfigError(f"image_size {self.image_size} is smaller than patch_size {self.patch_size}")
            if self.width % self.head_width:
                raise ConfigError(f"vision.width {self.width} is not a multiple of head_width {self.head_width}")
            self._validate_family_options()
        else:
            if (self.pool, self.norm_pre, self.patch_bias, self.project) != ("cls", True, False, True) \
                    or self.uses_family_options:
                raise ConfigError("vision.pool/norm_pre/patch_bias/project/rope/... are ViT options; leave them unset")
            if not (isinstance(self.layers, tuple) and len(self.layers) == 4):
                raise ConfigError("vision.layers must list four stage depths for a ResNet")
            if self.image_size % 32:
                raise ConfigError(f"a ResNet needs image_size divisible by 32, got {self.image_size}")
            if (self.width * 32) % self.head_width:
                raise ConfigError("32 * vision.width must be a multiple of head_width")

    def _validate_fastvit(self) -> None:
        if (self.pool, self.norm_pre, self.patch_bias, self.project, self.patch_dropout) != (
            "cls", True, False, True, 0.0
        ) or self.uses_family_options:  # fmt: skip
            raise ConfigError("vision.pool/norm_pre/patch_bias/project/rope/... are ViT options; leave them unset")
        layers = self.layers
        if not (isinstance(layers, tuple) and len(layers) >= 2 and all(isinstance(n, int) and n >= 1 for n in layers)):
            raise ConfigError("vision.layers must list the block count (>= 1) of each of >= 2 FastViT stages")
        n = len(layers)
        if not 0 <= self.attention_stages <= n or not 0 <= self.se_stages < n:
            raise ConfigError(f"vision.attention_stages must be in [0, {n}] and vision.se_stages in [0, {n - 1}]")
        if self.attention_norm not in ("batch", "layer"):
            raise ConfigError(f"vision.attention_norm must be 'batch' or 'layer', got {self.attention_norm!r}")
        for i in range(n - self.attention_stages, n):
            if (self.width << i) % self.head_width:
                raise ConfigError(
                    f"FastViT stage {i} ({self.width << i} channels) is not a multiple of head_width {self.head_width}"
                )
        if self.image_size % (2 ** (n + 1)):
            raise ConfigError(
                f"a {n}-stage FastViT needs image_size divisible by {2 ** (n + 1)}, got {self.image_size}"
            )

    def _validate_family_options(self) -> None:
        if self.pool == "cls" and self.class_token is False:
            raise ConfigError("vision.pool='cls' reads the class token: vision.class_token cannot be false")
        if self.pool_heads < 0 or (self.pool_heads and self.width % self.pool_heads):
            raise ConfigError(f"vision.pool_heads {self.pool_heads} must divide vision.width {self.width}")
        if self.pool_heads and self.pool != "map":
            raise ConfigError("vision.pool_heads is an attention-pool option: it needs vision.pool='map'")
        if self.rope_axes not in ("hw", "wh"):
            raise ConfigError(f"vision.rope_axes must be 'hw' or 'wh', got {self.rope_axes!r}")
        if self.rope and self.head_width % 4:
            raise ConfigError(f"vision.rope needs head_width divisible by 4, got {self.head_width}")
        if self.rope_ref_grid < 0 or self.rope_theta <= 1:
            raise ConfigError("vision.rope_ref_grid must be >= 0 and vision.rope_theta > 1")
        if self.mlp not in ("plain", "swiglu"):
            raise ConfigError(f"vision.mlp must be 'plain' or 'swiglu', got {self.mlp!r}")
        if self.norm_eps is not None and not 0 < self.norm_eps < 1:
            raise ConfigError(f"vision.norm_eps must be in (0, 1), got {self.norm_eps}")
        if self.proj_bias and not self.project:
            raise ConfigError("vision.proj_bias needs the projection (vision.project=true)")
        if self.stem not in ("patch", "conv"):
            raise ConfigError(f"vision.stem must be 'patch' or 'conv', got {self.stem!r}")
        if self.stem == "conv" and (self.patch_size != 16 or self.width % 4 or self.patch_bias):
            raise ConfigError("vision.stem='conv' makes 16-pixel patches of a width divisible by 4 (no patch_bias)")
        if not self.class_pos and not self.has_class_token:
            raise ConfigError("vision.class_pos=false is about a class token: the tower has none")


@dataclass(frozen=True)
class TextConfig:
    """Text Transformer. OpenAI's: causal attention, features read at the end-of-text token (the
    largest id, ``pool="eot"``). SigLIP's: bidirectional attention (``causal=False``) over texts
    padded to the full context, features read at the last position (``pool="last"``), and a bias on
    the final projection (``proj_bias``). MetaCLIP 2's: OpenAI's tower read at the first ``eos_id``
    token (``pool="eos"``), as its multilingual vocabulary's end token is not the largest id.

    ``kind="roberta"`` is a bidirectional encoder of the BERT / RoBERTa family (open_clip's
    XLM-RoBERTa text towers): token + learned position + token-type embeddings and a LayerNorm,
    post-norm blocks with exact GELU, padding (``pad_id``) masked out of attention. Positions follow
    RoBERTa's convention: the real tokens are numbered from ``pad_id + 1`` and padding sits at
    ``pad_id``, in a table of ``max_positions`` rows. ``pool`` is ``"mean"`` (over the non-padding
    tokens), ``"first"`` (the first token's features) or ``"cls"`` (BERT's pooler: ``tanh`` of a
    dense layer on the first token); ``proj`` maps the pooled features to ``embed_dim``:
    ``"linear"`` (no bias), ``"mlp"`` (open_clip's: ``Linear -> GELU -> Linear``, no biases, hidden
    width ``(width + embed_dim) // 2``) or ``"none"`` (``width == embed_dim``).

    ``kind="m2m100"`` is the encoder of M2M100 / NLLB (NLLB-CLIP's text tower): token embeddings
    scaled by ``sqrt(width)`` plus fixed sinusoidal positions (numbered as RoBERTa's, the padding
    position all zeros), pre-norm blocks with ReLU, a final LayerNorm; the same padding mask, pooling
    (``"mean"`` or ``"first"``: it has no pooler) and projections. ``max_positions`` is the size of its
    position table (``max_position_embeddings + 2``), a bound on ``context_length``.

    ``kind="mct"`` is Apple's MobileCLIP-S0 text tower (:mod:`clipforge.models.text_mct`): OpenAI's
    tower (token + learned position embeddings, ``layers`` pre-norm blocks, final norm, read at
    ``pool``, linear projection) between two convolutional blocks that mix the tokens along the
    sequence: a RepMixer (``x + gamma * (dwconv_bn(x) + bn(x) - bn'(x))``, depthwise kernel
    ``conv_kernel``) then a conv MLP (depthwise ``conv_kernel`` conv + BatchNorm, ``mlp_ratio``-wide
    GELU MLP, layer-scaled residual). The convolutions see the whole padded context, so every text
    is run at its full length. ``reparameterized`` says the RepMixers' train-time branches are folded
    into one depthwise convolution each (see ``CLIP.reparameterize``)."""

    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    layers: int = 12
    head_width: int = 64
    mlp_ratio: float = 4.0
    causal: bool = True
    pool: Literal["eot", "last", "eos", "mean", "first", "cls"] = "eot"
    proj_bias: bool = False
    eos_id: int | None = None
    pad_id: int | None = None
    max_positions: int = 0
    proj: Literal["linear", "mlp", "none"] = "linear"
    kind: Literal["clip", "roberta", "m2m100", "mct"] = "clip"
    conv_kernel: int = 0
    reparameterized: bool = False

    @property
    def heads(self) -> int:
        return self.width // self.head_width

    def validate(self) -> None:
        if self.width % self.head_width:
            raise ConfigError(f"text.width {self.width} is not a multiple of head_width {self.head_width}")
        if self.context_length < 2:
            raise ConfigError("text.context_length must hold at least the start and end tokens")
        if self.kind in ENCODER_KINDS:
            self._validate_encoder()
            return
        if self.kind not in ("clip", "mct"):
            raise ConfigError(f"text.kind must be 'clip', 'roberta', 'm2m100' or 'mct', got {self.kind!r}")
        if self.kind == "mct":
            if self.conv_kernel < 1 or self.conv_kernel % 2 == 0:
                raise ConfigError(f"text.kind='mct' needs an odd text.conv_kernel >= 1, got {self.conv_kernel}")
        elif self.conv_kernel or self.reparameterized:
            raise ConfigError("text.conv_kernel/reparameterized are options of text.kind='mct'; leave them unset")
        if (self.pad_id, self.max_positions, self.proj) != (None, 0, "linear"):
            raise ConfigError(
                "text.pad_id/max_positions/proj are options of the encoder towers (text.kind='roberta' or "
                "'m2m100'); leave them unset"
            )
        if self.pool not in ("eot", "last", "eos"):
            raise ConfigError(f"text.pool must be 'eot', 'last' or 'eos', got {self.pool!r}")
        if (self.pool == "eos") != (self.eos_id is not None):
            raise ConfigError("text.eos_id is needed by text.pool='eos' and only there")
        if self.eos_id is not None and not 0 <= self.eos_id < self.vocab_size:
            raise ConfigError(f"text.eos_id {self.eos_id} is outside the vocabulary (0..{self.vocab_size - 1})")

    def _validate_encoder(self) -> None:
        pools = ("mean", "first", "cls") if self.kind == "roberta" else ("mean", "first")
        if self.pool not in pools:
            raise ConfigError(
                f"text.kind={self.kind!r} pools with {', '.join(repr(p) for p in pools)}, got text.pool={self.pool!r}"
            )
        if self.causal or self.proj_bias or self.eos_id is not None:
            raise ConfigError(
                f"text.kind={self.kind!r} is bidirectional (text.causal=false) with no proj_bias or eos_id"
            )
        if self.conv_kernel or self.reparameterized:
            raise ConfigError("text.conv_kernel/reparameterized are options of text.kind='mct'; leave them unset")
        if self.proj not in ("linear", "mlp", "none"):
            raise ConfigError(f"text.proj must be 'linear', 'mlp' or 'none', got {self.proj!r}")
        if self.pad_id is None or not 0 <= self.pad_id < self.vocab_size:
            raise ConfigError(f"text.kind={self.kind!r} needs text.pad_id inside the vocabulary, got {self.pad_id!r}")
        if self.max_positions < self.context_length + self.pad_id + 1:
            raise ConfigError(
                f"text.max_positions {self.max_positions} cannot number {self.context_length} tokens from "
                f"text.pad_id + 1 = {self.pad_id + 1}"
            )


@dataclass(frozen=True)
class PreprocessConfig:
    """How images are turned into tensors for this model (OpenAI's pipeline by default)."""

    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"
    resize_mode: Literal["shortest", "squash"] = "shortest"

    def validate(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ConfigError("preprocess.mean and preprocess.std need three values (RGB)")
        if any(s <= 0 for s in self.std):
            raise ConfigError("preprocess.std must be positive")
        if self.interpolation not in ("bicubic", "bilinear"):
            raise ConfigError(f"unknown interpolation {self.interpolation!r}")
        if self.resize_mode not in ("shortest", "squash"):
            raise ConfigError(f"unknown resize_mode {self.resize_mode!r}")


@dataclass(frozen=True)
class ModelConfig:
    """A whole dual encoder. ``init_logit_bias`` set means the model is scored with the sigmoid
    (SigLIP) objective: ``sigmoid(logit_scale * cos + logit_bias)`` per pair (see :attr:`objective`).
    ``norm_eps`` is every LayerNorm's epsilon (OpenAI 1e-5, SigLIP 1e-6)."""

    embed_dim: int = 512
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    act: Activation = "gelu"
    init_logit_scale: float = math.log(1 / 0.07)
    init_logit_bias: float | None = None
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    norm_eps: float = 1e-5
    name: str = ""

    @property
    def image_size(self) -> int:
        return self.vision.image_size

    @property
    def objective(self) -> Literal["softmax", "sigmoid"]:
        """How the model's image-text scores turn into probabilities: ``sigmoid`` (independent, one
        per pair) for models trained with the sigmoid loss (they carry a logit bias), else ``softmax``."""
        return "sigmoid" if self.init_logit_bias is not None else "softmax"

    def validate(self) -> ModelConfig:
        if self.act not in ACTIVATIONS:
            raise ConfigError(f"act must be one of {', '.join(ACTIVATIONS)}, got {self.act!r}")
        if self.embed_dim <= 0:
            raise ConfigError("embed_dim must be positive")
        if not 0 < self.norm_eps < 1:
            raise ConfigError(f"norm_eps must be in (0, 1), got {self.norm_eps}")
        if self.vision.kind == "vit" and not self.vision.project and self.embed_dim != self.vision.width:
            raise ConfigError(
                f"vision.project=false needs embed_dim == vision.width ({self.embed_dim} != {self.vision.width})"
            )
        if self.text.proj == "none" and self.text.width != self.embed_dim:
            raise ConfigError(f"text.proj='none' needs embed_dim == text.width ({self.embed_dim} != {self.text.width})")
        self.vision.validate()
        self.text.validate()
        self.preprocess.validate()
        return self

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes).validate()

    def to_dict(self) -> dict[str, Any]:
        return _to_jsonable(dataclasses.asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return strict_from_dict(cls, data, "config", nested=_NESTED).validate()

    @classmethod
    def from_json(cls, path_or_text: str | Path) -> ModelConfig:
        text = Path(path_or_text).read_text() if _looks_like_path(path_or_text) else str(path_or_text)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"model config is not valid JSON: {e}") from e
        except RecursionError:
            raise ConfigError("model config is nested too deeply to be a config") from None
        if not isinstance(data, dict):
            raise ConfigError(f"model config must be a JSON object, got {type(data).__name__}")
        return cls.from_dict(data)


_NESTED = {"vision": VisionConfig, "text": TextConfig, "preprocess": PreprocessConfig}
T = TypeVar("T")


def strict_from_dict(cls: type[T], data: Any, where: str, *, nested: Mapping[str, type] | None = None) -> T:
    """``cls(**data)`` for a dataclass ``cls``, refusing unknown keys (naming them and the known
    ones, with ``where`` saying which object). JSON lists become tuples; each key of ``nested`` is
    built the same way, as that dataclass, from its sub-object."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a JSON object, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) in {where}: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if nested and key in nested:
            value = strict_from_dict(nested[key], value, f"{where}.{key}")
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    return value


def _looks_like_path(value: str | Path) -> bool:
    return isinstance(value, Path) or not str(value).lstrip().startswith("{")
