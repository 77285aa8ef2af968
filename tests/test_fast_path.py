"""The towers' fast path (``models.fast_path``) computes what the plain layers compute.

For every named architecture (shrunk by the test factory; names that shrink to the same model run
once, see ``factories.TINY_ARCHITECTURES``) in fp32 weights, bf16 weights and fp32
weights under ``torch.autocast("cpu", bfloat16)``:

- inference (no autograd): the fast path is taken (rows-only last block / pooled query; the MLP in
  place where allowed) and its embeddings match the plain path's, in dtype and value;
- training (autograd on): the rows-only shortcut is taken there too, the in-place MLP never is, and
  the gradients of every parameter match the plain path's.

The plain path is the same model under ``fast_path.disabled()``. Tolerances, as a fraction of the
tensor's own scale (different GEMM shapes round differently): fp32 1e-5 (seen: <1e-6); bf16 weights
or autocast 1/32 for embeddings and 1/16 for gradients, a few bf16 roundings (2^-8 each) compounded
over two blocks (seen: 0.011 and 0.017). Then: hooks, swapped
Linears and global hooks make the fast path step aside; LoRA's weight parametrization is honoured
by it; activation checkpointing; and the autocast case that once mixed dtypes in the in-place MLP.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
from factories import TINY_ARCHITECTURES, tiny_model_config
from torch import nn

import clipforge.models as m
from clipforge.models import fast_path
from clipforge.train.lora import apply_lora

NAMES = TINY_ARCHITECTURES
MODES = ["fp32", "bf16", "autocast"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny models: one intra-op thread is fastest, and far faster than several on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tokens(cfg, lengths: list[int]) -> torch.Tensor:
    """(B, T) ids: start token, random body, end token (the largest id) at position length-1."""
    V, T = cfg.text.vocab_size, cfg.text.context_length
    tokens = torch.zeros(len(lengths), T, dtype=torch.long)
    for i, n in enumerate(lengths):
        tokens[i, 0] = V - 2
        tokens[i, 1 : n - 1] = torch.randint(1, V - 2, (n - 2,))
        tokens[i, n - 1] = V - 1
    return tokens


def _setup(name: str, mode: str) -> tuple[m.CLIP, torch.Tensor, torch.Tensor]:
    cfg = tiny_model_config(name)
    model = m.create_model(cfg, dtype=torch.bfloat16 if mode == "bf16" else None).eval()
    images = torch.randn(3, 3, cfg.vision.image_size, cfg.vision.image_size)
    return model, images, _tokens(cfg, [4, 16, 9])


def _precision(mode: str) -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=torch.bfloat16) if mode == "autocast" else contextlib.nullcontext()


def _tol(mode: str, *, grad: bool = False) -> float:
    return 1e-5 if mode == "fp32" else 1 / 16 if grad else 1 / 32


def _assert_close(got: torch.Tensor, want: torch.Tensor, tol: float, what: str = "") -> None:
    """Same dtype and shape, and within ``tol`` of ``want``'s own scale."""
    assert got.dtype == want.dtype and got.shape == want.shape, (what, got.dtype, want.dtype, got.shape)
    scale = max(1.0, float(want.float().abs().max()))
    diff = float((got.float() - want.float()).abs().max())
    assert diff <= tol * scale, f"{what}: max diff {diff:.3g} > {tol:g} x scale {scale:.3g}"


@contextlib.contextmanager
def _counting(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """Counts the fast path's rows-only attention and in-place MLP calls."""
    calls = {"attend": 0, "in_place": 0}

    def wrap(name: str, key: str) -> None:
        original = getattr(fast_path, name)

        def counted(*args, **kwargs):
            calls[key] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(fast_path, name, counted)

    wrap("_attend", "attend")
    wrap("_activation_", "in_place")
    yield calls
    monkeypatch.undo()


def _image_shortcuts(cfg) -> tuple[int, int]:
    """(rows-only or pooled-query attentions, in-place MLPs) the image tower takes at inference: every
    block MLP plus a pool MLP, or a row-only last block. With RoPE the last block computes every row
    (no rows-only query), its MLPs still in place where the block is plain (PE-Core); EVA-02's blocks
    (SwiGLU, sub-LN) are not, and run on the plain layers."""
    v = cfg.vision
    if v.kind != "vit":
        return 0, 0
    pooled = v.pool == "map"
    if not v.rope:
        return 1, 3 if pooled else 2
    block_mlps = 2 if v.mlp == "plain" and not v.sub_ln else 0  # the tiny towers have 2 blocks
    return int(pooled), block_mlps + int(pooled)


def _encode(model: m.CLIP, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return model.encode_image(images, normalize=False), model.encode_text(tokens, normalize=False)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", NAMES)
def test_inference_matches_the_plain_path(name, mode, monkeypatch):
    model, images, tokens = _setup(name, mode)
    keep_images, keep_tokens = images.clone(), tokens.clone()
    with torch.no_grad(), _precision(mode):
        with fast_path.disabled():
            want = _encode(model, images, tokens)
        with _counting(monkeypatch) as calls:
            got = _encode(model, images, tokens)
    image_attends, image_mlps = _image_shortcuts(model.config)
    # an XLM-R text tower (post-norm blocks, every row pooled) takes no shortcut
    text_attends, text_mlps = (1, 2) if model.config.text.kind == "clip" else (0, 0)
    assert calls["attend"] == text_attends + image_attends  # the text tower's last block, the image row or pool
    # in place: every MLP (2 text blocks, plus 2 image blocks and a pool MLP or a row-only block),
    # except under autocast, where in-place ops would not be cast
    assert calls["in_place"] == (0 if mode == "autocast" else text_mlps + image_mlps)
    assert torch.equal(images, keep_images) and torch.equal(tokens, keep_tokens)  # never the caller's tensors
    for g, w, what in zip(got, want, ("image", "text"), strict=True):
        _assert_close(g, w, _tol(mode), what)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", NAMES)
def test_gradients_match_the_plain_path(name, mode, monkeypatch):
    # Under autograd the in-place MLP steps aside; the rows-only last block (and pooled query) stays,
    # and is exact: the same gradients as the whole last block with the rows read afterwards.
    model, images, tokens = _setup(name, mode)
    params = [p for p in model.parameters() if p.requires_grad]

    def grads(plain: bool) -> tuple[torch.Tensor, ...]:
        with fast_path.disabled() if plain else contextlib.nullcontext(), _precision(mode):
            img, txt = _encode(model, images, tokens)
        torch.manual_seed(1)  # the same random read-out weights for both paths
        loss = (img.float() * torch.randn(img.shape)).sum() + (txt.float() * torch.randn(txt.shape)).sum()
        return torch.autograd.grad(loss, params, allow_unused=True)

    want = grads(plain=True)
    with _counting(monkeypatch) as calls:
        got = grads(plain=False)
    text_attends = 1 if model.config.text.kind == "clip" else 0  # an XLM-R tower takes no shortcut
    assert calls["attend"] == text_attends + _image_shortcuts(model.config)[0] and calls["in_place"] == 0
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    for n, g, w in zip(names, got, want, strict=True):
        if w is None:
            assert g is None or not g.any(), n
        else:
            _assert_close(g, w, _tol(mode, grad=True), n)


def test_autocast_inference_keeps_the_plain_dtype_and_values(monkeypatch):
    # Regression: in-place ops are not autocast, so under autocast the in-place MLP would add a bf16
    # hidden activation into the fp32 residual stream (a dtype error, or fp32 results where the
    # plain path gives bf16). The fast path must step aside for the MLP and match the plain path.
    for name in ("vit-tiny", "siglip-tiny"):
        model, images, tokens = _setup(name, "fp32")
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            with fast_path.disabled():
                want = _encode(model, images, tokens)
            with _counting(monkeypatch) as calls:
                got = _encode(model, images, tokens)
        assert calls["in_place"] == 0 and calls["attend"] == 2
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype == torch.bfloat16
            _assert_close(g, w, 1 / 32)


class _Doubled(nn.Linear):
    """A swapped-in Linear (as a quantised or adapter wrapper would be) with its own forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


def _last_block_modules(model: m.CLIP) -> dict[str, nn.Module]:
    block = model.text.transformer.blocks[-1]
    return {
        "text qkv": block.attn.qkv,
        "text fc2": block.mlp.fc2,
        "text norm2": block.norm2,
        "text act": block.mlp.act,
        "text block": block,
        "text transformer": model.text.transformer,
        "image qkv": model.visual.transformer.blocks[-1].attn.qkv,
        "image proj": model.visual.transformer.blocks[-1].attn.proj,
    }


HOOKED = ["text qkv", "text fc2", "text norm2", "text act", "text block", "text transformer", "image qkv", "image proj"]


@pytest.mark.parametrize("hook", ["forward", "forward_pre"])
@pytest.mark.parametrize("where", HOOKED)
def test_a_hook_is_honoured_at_inference(where, hook):
    model, images, tokens = _setup("vit-tiny", "fp32")
    with torch.no_grad():
        before = _encode(model, images, tokens)
    module = _last_block_modules(model)[where]
    seen = []  # the shapes of the hooked module's first input

    def forward_hook(mod: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        seen.append(args[0].shape)
        return out.flip(-1)  # channels reversed: visible through any later norm

    def pre_hook(mod: nn.Module, args: tuple) -> tuple:
        seen.append(args[0].shape)
        return (args[0].flip(-1), *args[1:])

    if hook == "forward":
        handle = module.register_forward_hook(forward_hook)
    else:
        handle = module.register_forward_pre_hook(pre_hook)
    with torch.no_grad():
        got = _encode(model, images, tokens)
        n_calls = len(seen)
        with fast_path.disabled():
            want = _encode(model, images, tokens)
    handle.remove()
    assert n_calls == 1 and all(len(s) == 3 for s in seen)  # the module ran once, on every token (B, T, C)
    for g, w in zip(got, want, strict=True):
        _assert_close(g, w, 1e-5)
    tower = 0 if where.startswith("image") else 1
    assert not torch.allclose(got[tower], before[tower])  # the hook did change the result


def test_a_hook_on_the_attention_pool_is_honoured_at_inference():
    model, images, _ = _setup("siglip-tiny", "fp32")
    with torch.no_grad():
        before = model.encode_image(images, normalize=False)
    seen = []

    def hook(mod: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        seen.append(args[0].shape)
        return out.flip(-1)

    model.visual.attn_pool.attn.qkv.register_forward_hook(hook)
    with torch.no_grad():
        got = model.encode_image(images, normalize=False)
        assert len(seen) == 2  # the plain pool: the probe's queries, the tokens' keys and values
        with fast_path.disabled():
            want = model.encode_image(images, normalize=False)
    _assert_close(got, want, 1e-5)
    assert not torch.allclose(got, before)


@pytest.mark.parametrize("name", ["vit-tiny", "siglip-tiny"])
def test_a_swapped_linear_is_honoured_at_inference(name):
    model, images, tokens = _setup(name, "fp32")
    with torch.no_grad():
        before = _encode(model, images, tokens)
    targets = [model.text.transformer.blocks[-1].mlp, model.visual.transformer.blocks[-1].mlp]
    if name == "siglip-tiny":
        targets.append(model.visual.attn_pool.mlp)
    for mlp in targets:
        doubled = _Doubled(mlp.fc2.in_features, mlp.fc2.out_features)
        doubled.load_state_dict(mlp.fc2.state_dict())
        mlp.fc2 = doubled
    with torch.no_grad():
        got = _encode(model, images, tokens)
        with fast_path.disabled():
            want = _encode(model, images, tokens)
    for g, w, b in zip(got, want, before, strict=True):
        _assert_close(g, w, 1e-5)
        assert not torch.allclose(g, b)  # the swap did change the result


def test_a_global_module_hook_is_honoured_at_inference():
    model, images, tokens = _setup("vit-tiny", "fp32")
    seen = []

    def hook(mod: nn.Module, args: tuple, out: torch.Tensor) -> None:
        if isinstance(mod, nn.Linear):
            seen.append(args[0].shape[:-1])

    handle = nn.modules.module.register_module_forward_hook(hook)
    try:
        with torch.no_grad():
            model.encode_text(tokens)
    finally:
        handle.remove()
    assert len(seen) == 2 * 4 and all(s == tokens.shape for s in seen)  # every Linear, every token


_REGISTER = {  # every hook torch's Module.__call__ runs, each set through its public function
    "forward": lambda m: m.register_forward_hook(lambda *a: None),
    "forward_pre": lambda m: m.register_forward_pre_hook(lambda *a: None),
    "full_backward": lambda m: m.register_full_backward_hook(lambda *a: None),
    "full_backward_pre": lambda m: m.register_full_backward_pre_hook(lambda *a: None),
    "global_forward": lambda m: nn.modules.module.register_module_forward_hook(lambda *a: None),
    "global_forward_pre": lambda m: nn.modules.module.register_module_forward_pre_hook(lambda *a: None),
    "global_backward": lambda m: nn.modules.module.register_module_full_backward_hook(lambda *a: None),
    "global_backward_pre": lambda m: nn.modules.module.register_module_full_backward_pre_hook(lambda *a: None),
}


@pytest.mark.parametrize("kind", sorted(_REGISTER))
def test_unhooked_sees_every_kind_of_hook(kind):
    # _unhooked is the one reader of torch's private hook tables: a torch that moved them must fail here.
    m = nn.Linear(2, 2)
    assert fast_path._unhooked(m)
    handle = _REGISTER[kind](m)
    try:
        assert not fast_path._unhooked(m)
    finally:
        handle.remove()
    assert fast_path._unhooked(m)


def test_lora_parametrization_is_applied_by_the_fast_path(monkeypatch):
    # LoRA adapts a Linear's weight by parametrization: reading ``.weight`` gives W + scale * B @ A,
    # so the fast path (which reads it) stays in use and must agree, values and adapter gradients.
    model, images, tokens = _setup("vit-tiny", "fp32")
    with torch.no_grad():
        base = _encode(model, images, tokens)
    apply_lora(model, rank=2, alpha=4, towers=("image", "text"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.normal_(std=0.5)  # B starts at zero: make the adapters count
    params = [p for p in model.parameters() if p.requires_grad]

    def run(plain: bool) -> tuple[torch.Tensor, ...]:
        with fast_path.disabled() if plain else contextlib.nullcontext():
            img, txt = _encode(model, images, tokens)
        return (img.detach(), txt.detach(), *torch.autograd.grad(img.sum() + txt.sum(), params))

    want = run(plain=True)
    with _counting(monkeypatch) as calls:
        got = run(plain=False)
        with torch.no_grad():
            inference = _encode(model, images, tokens)
    assert calls["attend"] == 4 and calls["in_place"] == 4  # rows-only under grad and at inference
    for g, w in zip((*got, *inference), (*want, *want[:2]), strict=True):
        _assert_close(g, w, 1e-5)
    assert not torch.allclose(want[0], base[0]) and not torch.allclose(want[1], base[1])  # adapters count


def test_grad_checkpointing_matches_the_plain_path():
    model, images, tokens = _setup("vit-tiny", "fp32")
    model.set_grad_checkpointing(True)
    params = list(model.parameters())

    def grads(plain: bool) -> tuple[torch.Tensor, ...]:
        with fast_path.disabled() if plain else contextlib.nullcontext():
            img, txt = _encode(model, images, tokens)
        return torch.autograd.grad(img.square().sum() + txt.square().sum(), params, allow_unused=True)

    for g, w in zip(grads(plain=False), grads(plain=True), strict=True):
        if w is None:
            assert g is None or not g.any()
        else:
            _assert_close(g, w, 1e-5)


def test_disabled_is_scoped():
    model, images, tokens = _setup("vit-tiny", "fp32")
    with fast_path.disabled():
        with fast_path.disabled():
            pass
        assert not fast_path._ENABLED.get()
    assert fast_path._ENABLED.get()
