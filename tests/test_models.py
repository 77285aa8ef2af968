import dataclasses
import json
import math

import pytest
import torch
from factories import distinct_architectures, tiny_model_config

import clipforge.models as m
from clipforge.config import ConfigError, ModelConfig

NAMES = m.list_models()
# Distinct tiny architectures by what a test needs of them (a newly registered one joins by itself).
VIT = distinct_architectures(lambda c: c.vision.kind == "vit")
CAUSAL_TEXT = distinct_architectures(lambda c: c.text.causal)
CLS_VIT_EOT_TEXT = distinct_architectures(  # a class-token image tower, an end-token text tower: _full_pass_reference
    lambda c: c.vision.kind == "vit" and c.vision.pool == "cls" and c.vision.project and c.text.causal
    and c.text.pool == "eot"
)


def random_tokens(cfg: ModelConfig, batch: int, lengths: list[int]) -> torch.Tensor:
    """Token rows with start token, random body and the end token (largest id) at position length-1."""
    V, T = cfg.text.vocab_size, cfg.text.context_length
    tokens = torch.zeros(batch, T, dtype=torch.long)
    for i, n in enumerate(lengths):
        tokens[i, 0] = V - 2
        tokens[i, 1 : n - 1] = torch.randint(1, V - 2, (n - 2,))
        tokens[i, n - 1] = V - 1
    return tokens


def test_required_architectures_exist():
    for name in ["ViT-B-32", "ViT-B-16", "ViT-L-14", "RN50", "RN101", "vit-tiny", "vit-small", "rn-tiny"]:
        assert name in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_named_config_round_trips(name):
    cfg = m.get_model_config(name)
    assert ModelConfig.from_dict(json.loads(cfg.to_json())) == cfg
    assert cfg.name == name


def test_tiny_model_forward_backward(architecture):
    cfg = tiny_model_config(architecture)
    model = m.create_model(cfg)
    images = torch.randn(3, 3, cfg.image_size, cfg.image_size)
    tokens = random_tokens(cfg, 3, [5, 16, 9])
    out = model(images, tokens)
    assert out.image_features.shape == (3, cfg.embed_dim) == out.text_features.shape
    assert torch.isfinite(out.image_features).all() and torch.isfinite(out.text_features).all()
    assert torch.allclose(out.image_features.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(out.text_features.norm(dim=-1), torch.ones(3), atol=1e-5)
    # OpenAI's initial temperature, or SigLIP's scale 10 for sigmoid-loss models
    assert out.logit_scale.item() == pytest.approx(1 / 0.07 if cfg.init_logit_bias is None else 10.0, rel=1e-5)
    logits = out.logit_scale * out.image_features @ out.text_features.T
    if out.logit_bias is not None:
        logits = logits + out.logit_bias
    torch.testing.assert_close(logits, model.logits(out.image_features, out.text_features))
    loss = logits.logsumexp(-1).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.logit_scale.grad is not None


def test_grad_checkpointing_gives_equal_outputs_and_grads(architecture):
    cfg = tiny_model_config(architecture)
    model = m.create_model(cfg).train()
    if cfg.vision.kind == "resnet":
        model.eval()  # BatchNorm statistics would otherwise change between the two passes
    images = torch.randn(2, 3, cfg.image_size, cfg.image_size)
    tokens = random_tokens(cfg, 2, [4, 7])

    def run():
        model.zero_grad()
        out = model(images, tokens)
        (out.image_features.sum() + out.text_features.square().sum()).backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ref, ref_grads = run()
    model.set_grad_checkpointing(True)
    out, grads = run()
    torch.testing.assert_close(out.image_features, ref.image_features)
    torch.testing.assert_close(out.text_features, ref.text_features)
    assert grads.keys() == ref_grads.keys()
    for k in grads:
        torch.testing.assert_close(grads[k], ref_grads[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", CAUSAL_TEXT)
def test_padding_skip_matches_full_length_pass(name):
    cfg = tiny_model_config(name)
    model = m.create_model(cfg).eval()
    tokens = random_tokens(cfg, 4, [3, 5, 8, 4])
    # Padding values must not matter either: fill the tail with arbitrary ids.
    tokens[:, 8:] = torch.randint(1, cfg.text.vocab_size - 2, (4, cfg.text.context_length - 8))
    with torch.no_grad():
        fast = model.encode_text(tokens)
        model.text.skip_padding = False
        full = model.encode_text(tokens)
    torch.testing.assert_close(fast, full, rtol=0, atol=1e-5)


def test_text_longer_than_context_is_an_error(architecture):
    cfg = tiny_model_config(architecture)
    model = m.create_model(cfg)
    with pytest.raises(ValueError, match="context length"):
        model.encode_text(torch.zeros(1, cfg.text.context_length + 1, dtype=torch.long))


def test_logit_scale_is_clamped_at_100():
    model = m.create_model(tiny_model_config())
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1000.0))
    cfg = model.config
    out = model(torch.randn(1, 3, cfg.image_size, cfg.image_size), random_tokens(cfg, 1, [4]))
    assert out.logit_scale.item() == pytest.approx(100.0)


def test_logit_bias_only_when_configured():
    cfg = tiny_model_config()
    assert m.create_model(cfg).logit_bias is None
    biased = m.create_model(cfg.replace(init_logit_bias=-10.0))
    assert biased.logit_bias.item() == -10.0


def test_activation_is_explicit():
    cfg = tiny_model_config()
    gelu = m.create_model(cfg)
    quick = m.create_model(cfg.replace(act="quick_gelu"))
    assert type(gelu.text.transformer.blocks[0].mlp.act).__name__ == "GELU"
    assert type(quick.text.transformer.blocks[0].mlp.act).__name__ == "QuickGELU"


def test_unknown_config_keys_are_errors(tmp_path):
    data = m.get_model_config("vit-tiny").to_dict()
    data["vision"]["patch_sz"] = 8
    with pytest.raises(ConfigError, match="patch_sz"):
        ModelConfig.from_dict(data)
    data = m.get_model_config("vit-tiny").to_dict()
    data["dropout"] = 0.1
    with pytest.raises(ConfigError, match="dropout"):
        ModelConfig.from_dict(data)


def test_invalid_configs_are_errors():
    cfg = m.get_model_config("vit-tiny")
    with pytest.raises(ConfigError, match="multiple of patch_size"):
        cfg.replace(vision=dataclasses.replace(cfg.vision, image_size=65))
    with pytest.raises(ConfigError, match="act"):
        cfg.replace(act="relu")
    with pytest.raises(ConfigError, match="unknown model"):
        m.get_model_config("ViT-Z-99")
    with pytest.raises(ConfigError, match="Did you mean 'ViT-B-32'"):
        m.get_model_config("vit-b-32")


def test_config_json_file(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(m.get_model_config("rn-tiny").to_json())
    assert m.create_model(path).config.vision.kind == "resnet"


@pytest.mark.parametrize("name", VIT)
def test_vit_patch_embeddings_shape(name):
    cfg = tiny_model_config(name)
    model = m.create_model(cfg).eval()
    images = torch.randn(2, 3, cfg.image_size, cfg.image_size)
    patches = model.visual.project_patches(images)
    assert patches.shape == (2, 2, 2, cfg.embed_dim)
    if cfg.vision.pool == "map":  # each patch pooled on its own: the probe attending to that token alone
        first = model.visual.n_prefix  # PE-Core keeps a class token beside the attention pool
        with torch.no_grad():
            tokens = model.visual.norm_post(model.visual.forward_tokens(images))  # (2, [1 +] 4, width)
            alone = model.visual._project(model.visual.attn_pool(tokens[:, first + 3 : first + 4]))  # (2, embed_dim)
        torch.testing.assert_close(patches[:, 1, 1].detach(), alone)


def test_bf16_weights_run_and_stay_close(architecture):
    cfg = tiny_model_config(architecture)
    model = m.create_model(cfg).eval()
    images = torch.randn(4, 3, cfg.image_size, cfg.image_size)
    tokens = random_tokens(cfg, 4, [3, 5, 8, 4])
    with torch.no_grad():
        ref_i, ref_t = model.encode_image(images), model.encode_text(tokens)
        model.to(torch.bfloat16)
        bf_i, bf_t = model.encode_image(images).float(), model.encode_text(tokens).float()
    assert (bf_i * ref_i).sum(-1).min() > 0.99
    assert (bf_t * ref_t).sum(-1).min() > 0.99


def _full_pass_reference(model: m.CLIP, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Embeddings from the whole last block, the rows read afterwards (the textbook computation)."""
    v, t = model.visual, model.text
    img = v.norm_post(v.forward_tokens(images)[:, 0]) @ v.proj  # (B, E)
    img = img + v.proj_bias if v.proj_bias is not None else img  # EVA-02's biased projection
    eot = tokens.argmax(dim=-1)  # (B,)
    x = t.token_embed(tokens) + t.pos_embed[: tokens.shape[1]]  # (B, T, width)
    x = t.transformer(x, causal=True)[torch.arange(len(tokens)), eot]  # (B, width)
    return img, t.norm_final(x) @ t.proj


@pytest.mark.parametrize("name", CLS_VIT_EOT_TEXT)
@pytest.mark.parametrize("act", ["gelu", "quick_gelu"])
def test_last_block_computing_only_the_read_rows_changes_nothing(act, name):
    # The image tower reads the class token and the text tower the end token, so the last block
    # computes only those rows; inference also updates activations in place. Both must give the
    # textbook result, with and without autograd, and the same gradients.
    cfg = tiny_model_config(name, act=act)
    cfg = cfg.replace(vision=dataclasses.replace(cfg.vision, image_size=4 * cfg.vision.patch_size, layers=3))
    model = m.create_model(cfg)
    images = torch.randn(3, 3, cfg.vision.image_size, cfg.vision.image_size)
    tokens = random_tokens(cfg, 3, [4, 16, 9])
    ref_img, ref_txt = _full_pass_reference(model, images, tokens)
    with torch.no_grad():
        keep = images.clone()
        img, txt = model.visual(images), model.text(tokens)
        assert torch.equal(images, keep)  # in-place inference never touches the caller's tensors
    torch.testing.assert_close(img, ref_img, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(txt, ref_txt, atol=1e-5, rtol=1e-5)

    params = list(model.parameters())
    loss = model.visual(images).sum() + model.text(tokens).sum()
    ref_loss = sum(r.sum() for r in _full_pass_reference(model, images, tokens))
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    ref = torch.autograd.grad(ref_loss, params, allow_unused=True)
    for p, g, r in zip(params, grads, ref, strict=True):
        if r is None:
            assert g is None or not g.any()
        else:
            # fp32 gradients agree to ~1e-7 of the tensor's own scale (the text embeddings' reach ~100:
            # there even the textbook path is ~8e-5 from the float64 result)
            atol = 1e-5 * max(1.0, float(r.abs().max()))
            torch.testing.assert_close(g, r, atol=atol, rtol=1e-4, msg=lambda s, p=p: f"{tuple(p.shape)}: {s}")


def test_resnet_convolutions_run_channels_last_also_after_loading_and_match_the_contiguous_layout():
    model = m.create_model(tiny_model_config("RN50")).eval()
    convs = [mod for mod in model.visual.modules() if isinstance(mod, torch.nn.Conv2d)]

    def channels_last() -> bool:
        return all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs) and not all(
            c.weight.is_contiguous() for c in convs
        )

    assert channels_last()
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}  # as a checkpoint hands them in
    model.load_state_dict(state, assign=True)
    convs = [mod for mod in model.visual.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert channels_last()
    params = [c.weight for c in convs]

    images = torch.randn(2, 3, model.config.vision.image_size, model.config.vision.image_size)
    with torch.no_grad():
        fast = model.encode_image(images)
        model.visual.set_memory_format(torch.contiguous_format)
        assert all(c.weight.is_contiguous() for c in convs)
        assert all(c.weight is p for c, p in zip(convs, params, strict=True))  # an optimiser's stay valid
        plain = model.encode_image(images)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)


def test_a_resnet_model_pickles_and_keeps_its_layout():
    import pickle

    model = m.create_model(tiny_model_config("RN50"))
    again = pickle.loads(pickle.dumps(model))
    conv = again.visual.stem[0]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    again.load_state_dict({k: v.contiguous() for k, v in model.state_dict().items()}, assign=True)
    assert again.visual.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
