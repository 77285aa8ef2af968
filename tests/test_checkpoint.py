import json

import pytest
import torch
from safetensors.torch import save_file

from clipforge.checkpoint import (
    CheckpointError,
    is_clipforge_checkpoint,
    load_checkpoint,
    load_state_dict_strict,
    read_checkpoint_info,
    save_checkpoint,
)
from clipforge.models import create_model


@pytest.fixture
def model(tiny_model):
    """The default tiny model (``vit-tiny`` shrunk), eval mode."""
    return tiny_model()


@pytest.fixture
def any_model(tiny_model, architecture):
    """Each registered architecture in turn, shrunk, eval mode."""
    return tiny_model(architecture)


def inputs(cfg):
    tokens = torch.zeros(2, cfg.text.context_length, dtype=torch.long)
    tokens[:, 0], tokens[0, 1:4], tokens[0, 4], tokens[1, 1] = 62, 5, 63, 63
    return torch.randn(2, 3, cfg.image_size, cfg.image_size), tokens


def test_round_trip_gives_identical_embeddings(tmp_path, any_model):
    model = any_model
    path = save_checkpoint(tmp_path / "m.safetensors", model, provenance={"source": "test"})
    loaded, info = load_checkpoint(path)
    assert info.config == model.config
    assert info.provenance == {"source": "test"}
    images, tokens = inputs(model.config)
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(images), model.encode_image(images))
        assert torch.equal(loaded.encode_text(tokens), model.encode_text(tokens))
    assert not loaded.training
    assert is_clipforge_checkpoint(path)
    assert not list(tmp_path.glob("*.tmp")), "no temporary file left behind"


def test_loaded_tensors_are_64_byte_aligned(tmp_path, model):
    """safetensors hands out CPU tensors starting at any byte; kept as parameters they made one-thread
    oneDNN convolutions of a reloaded model differ from the saved one's in the last bit (AVX2)."""
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    loaded, _ = load_checkpoint(path)
    misaligned = [k for k, t in loaded.state_dict().items() if t.data_ptr() % 64]
    assert not misaligned


def test_metadata_carries_architecture_and_preprocessing(tmp_path, model):
    cfg = model.config.replace(act="quick_gelu")
    path = save_checkpoint(tmp_path / "q.safetensors", create_model(cfg))
    info = read_checkpoint_info(path)
    assert info.config.act == "quick_gelu"
    assert info.config.preprocess.mean == cfg.preprocess.mean
    assert info.config.vision.image_size == cfg.vision.image_size


def test_tensors_that_do_not_fit_the_config_are_named(tmp_path, model):
    state = {k: v.clone() for k, v in model.state_dict().items()}
    del state["text.proj"]
    state["visual.extra"] = torch.zeros(1)
    state["visual.pos_embed"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError) as e:
        load_state_dict_strict(create_model(model.config), state, source="x.safetensors")
    msg = str(e.value)
    assert "missing 1 tensor(s): text.proj" in msg
    assert "unexpected 1 tensor(s): visual.extra" in msg
    assert "visual.pos_embed: (3, 3) in x.safetensors" in msg


def test_config_mismatch_on_load_is_an_error(tmp_path, model):
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    # Rewrite the metadata to claim a wider text tower than the stored tensors.
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    cfg = json.loads(meta["config"])
    cfg["text"]["width"] = 64
    meta["config"] = json.dumps(cfg)
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_checkpoint(tmp_path / "bad.safetensors")


@pytest.mark.parametrize(
    "content,match",
    [(b"", "too short"), (b"\xff" * 64, "bad header length"), (b"PK\x03\x04" + b"\0" * 60, "bad header length")],
)
def test_not_a_checkpoint(tmp_path, content, match):
    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        read_checkpoint_info(path)
    assert not is_clipforge_checkpoint(path)


def test_plain_safetensors_is_not_mistaken_for_a_checkpoint(tmp_path):
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="not a clipforge checkpoint"):
        read_checkpoint_info(tmp_path / "plain.safetensors")


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_truncated_weights(tmp_path, model):
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_loaded_model_is_trainable(tmp_path, any_model):
    model = any_model
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "m.safetensors", model))
    params = dict(loaded.named_parameters())
    assert params.keys() == dict(model.named_parameters()).keys()
    assert all(p.requires_grad and p.device.type == "cpu" for p in params.values())
    images, tokens = inputs(model.config)
    loaded.train()(images, tokens).image_features.sum().backward()
    no_grad = [n for n, p in loaded.visual.named_parameters() if p.grad is None]
    assert not no_grad, f"image-tower parameters without a gradient: {no_grad}"
