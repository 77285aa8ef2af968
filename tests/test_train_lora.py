"""LoRA: only adapters train, merging gives the same model (<= 1e-5), the saved model is a plain
checkpoint that exports to Hugging Face / open_clip, and a LoRA run resumes bit-exactly."""

from __future__ import annotations

import pytest
import torch
from convert_utils import VOCAB, example_tokens, max_diff, normalized, small_tokenizer
from train_helpers import short_run, write_pairs_csv

from clipforge.checkpoint import load_checkpoint, load_state_dict_strict, load_weights, save_checkpoint
from clipforge.convert import export_hf, export_open_clip, import_model
from clipforge.models import CLIP
from clipforge.train import TrainConfig
from clipforge.train.loop import fit
from clipforge.train.lora import adapter_state_dict, apply_lora, merge_lora, merged_state_dict

BASE = {"seed": 0, "vocab_size": VOCAB, "embed_dim": 16}  # the base model: same weights on every call


def _outputs(model: CLIP, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(tokens)


def test_adapters_start_at_zero_and_merge_to_the_same_outputs(tiny_model):
    base = tiny_model(**BASE)
    images, tokens = torch.randn(3, 3, 16, 16), example_tokens()
    want = _outputs(base, images, tokens)
    model = tiny_model(**BASE)
    n = apply_lora(model, rank=4, alpha=8, towers=("image", "text"))
    assert n == 2 * 2 * 4  # 2 towers x 2 blocks x (qkv, proj, fc1, fc2)
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(k.endswith((".lora_A", ".lora_B")) for k in trainable)
    got = _outputs(model, images, tokens)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))  # B = 0: the base model
    with torch.no_grad():
        for k, p in model.named_parameters():
            if k.endswith(".lora_B"):
                p.normal_(std=0.05)
    adapted = _outputs(model, images, tokens)
    assert max_diff(adapted[0], want[0]) > 1e-3  # the adapters change the model...
    plain = tiny_model(**BASE)
    load_state_dict_strict(plain, merged_state_dict(model))  # ...and merge into plain weights
    for a, b in zip(_outputs(plain, images, tokens), adapted, strict=True):
        assert max_diff(a, b) <= 1e-5
    merge_lora(model)  # in place: plain nn.Linear weights again
    assert not adapter_state_dict(model) and set(model.state_dict()) == set(plain.state_dict())
    for a, b in zip(_outputs(model, images, tokens), adapted, strict=True):
        assert max_diff(a, b) <= 1e-5


def test_towers_and_bad_options(tiny_model):
    model = tiny_model(**BASE)
    apply_lora(model, rank=2, towers=("text",))
    assert all(k.startswith("text.") for k in adapter_state_dict(model))
    with pytest.raises(ValueError, match="lora_towers"):
        TrainConfig.from_flat(data="shapes", lora_rank=2, lora_towers="image,audio").validate()
    with pytest.raises(ValueError, match="cannot be combined"):
        TrainConfig.from_flat(data="shapes", lora_rank=2, lock_image=True).validate()


@pytest.fixture()
def lora_run(tmp_path, tiny_model):
    init = save_checkpoint(tmp_path / "init.safetensors", tiny_model(**BASE), tokenizer=small_tokenizer())
    cfg = short_run(tmp_path, data=str(write_pairs_csv(tmp_path / "data", n=24)), init=str(init), lora_rank=4, lr=1e-2)
    return cfg, init


@pytest.mark.slow
def test_lora_fit_trains_only_adapters_saves_plain_weights_and_resumes(lora_run):
    cfg, init = lora_run
    straight = fit(cfg.replace(name="straight"))
    start, final = load_weights(init), load_weights(straight.model_path)
    assert set(start) == set(final)  # a plain checkpoint: the model's own names, no adapter tensors
    adapted = {f"{k}.weight" for k in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")}
    changed = {k for k in start if not torch.equal(start[k], final[k])}
    assert changed and all(any(k.endswith(a) for a in adapted) for k in changed)  # only adapted matrices moved
    model = load_checkpoint(straight.model_path)[0]  # loads like any clipforge model
    assert isinstance(model, CLIP)

    cut = fit(cfg.replace(name="cut"))
    for path in (cut.run_dir / "checkpoints").glob("step-000004.*"):  # as if killed after step 3
        path.unlink()
    cut.model_path.unlink()
    resumed = fit(cfg.replace(name="cut"), resume=True)
    again = load_weights(resumed.model_path)
    assert all(torch.equal(final[k], again[k]) for k in final)


@pytest.mark.full_suite
def test_lora_model_exports_to_hf_and_open_clip(lora_run, tmp_path):
    transformers = pytest.importorskip("transformers", reason="transformers is the reference implementation")
    cfg, _ = lora_run
    result = fit(cfg.replace(name="export", steps=2))
    ours = load_checkpoint(result.model_path)[0].eval()
    tokenizer = small_tokenizer()
    images, tokens = torch.randn(2, 3, 16, 16), example_tokens()
    ref = transformers.CLIPModel.from_pretrained(export_hf(ours, tmp_path / "hf", tokenizer=tokenizer)).eval()
    with torch.no_grad():
        assert max_diff(normalized(ref.get_image_features(pixel_values=images)), ours.encode_image(images)) <= 1e-5
        assert max_diff(normalized(ref.get_text_features(input_ids=tokens)), ours.encode_text(tokens)) <= 1e-5
    back = import_model(export_open_clip(ours, tmp_path / "oc", tokenizer=tokenizer)).model
    for key, value in ours.state_dict().items():
        assert torch.equal(value, back.state_dict()[key]), key
