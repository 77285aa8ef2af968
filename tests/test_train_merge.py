"""WiSE-FT: alpha 0 and 1 return the inputs exactly; 0.5 is the mean; mismatches are errors."""

import pytest
import torch

from clipforge.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from clipforge.cli.main import main
from clipforge.train.merge import interpolate_state_dicts, merge_checkpoints


@pytest.fixture
def two_checkpoints(tmp_path, tiny_model):
    a, b = tiny_model(seed=1), tiny_model(seed=2)
    return (
        save_checkpoint(tmp_path / "a.safetensors", a),
        save_checkpoint(tmp_path / "b.safetensors", b),
        a,
        b,
    )


@pytest.mark.parametrize("alpha,which", [(0.0, 0), (1.0, 1)])
def test_alpha_endpoints_return_inputs_exactly(two_checkpoints, tmp_path, alpha, which):
    pa, pb, a, b = two_checkpoints
    out = merge_checkpoints(pa, pb, alpha=alpha, out=tmp_path / "m.safetensors")
    merged, _ = load_checkpoint(out)
    ref = (a, b)[which].state_dict()
    for key, value in merged.state_dict().items():
        assert torch.equal(value, ref[key]), key


def test_half_way_is_the_mean(two_checkpoints, tmp_path):
    pa, pb, a, b = two_checkpoints
    main(["merge", str(pa), str(pb), "--alpha", "0.5", "--out", str(tmp_path / "m.safetensors")])
    merged, info = load_checkpoint(tmp_path / "m.safetensors")
    sa, sb = a.state_dict(), b.state_dict()
    for key, value in merged.state_dict().items():
        torch.testing.assert_close(value, (sa[key] + sb[key]) / 2)
    assert info.provenance["alpha"] == 0.5


def test_mismatches_are_errors(two_checkpoints, tmp_path, tiny_model):
    pa, _, _, _ = two_checkpoints
    other = tiny_model(vocab_size=80)
    pc = save_checkpoint(tmp_path / "c.safetensors", other)
    with pytest.raises(CheckpointError, match="different architectures"):
        merge_checkpoints(pa, pc, alpha=0.5, out=tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="alpha"):
        interpolate_state_dicts({"w": torch.zeros(2)}, {"w": torch.ones(2)}, alpha=1.5)
    with pytest.raises(ValueError, match="shape"):
        interpolate_state_dicts({"w": torch.zeros(2)}, {"w": torch.ones(3)}, alpha=0.5)
    with pytest.raises(ValueError, match="different tensors"):
        interpolate_state_dicts({"w": torch.zeros(2)}, {"v": torch.ones(2)}, alpha=0.5)


def test_integer_buffers_are_taken_not_mixed():
    a = {"n": torch.tensor(3), "w": torch.zeros(2, dtype=torch.bfloat16)}
    b = {"n": torch.tensor(9), "w": torch.ones(2, dtype=torch.bfloat16)}
    out = interpolate_state_dicts(a, b, alpha=0.25)
    assert int(out["n"]) == 3 and out["w"].dtype == torch.bfloat16
    torch.testing.assert_close(out["w"].float(), torch.full((2,), 0.25))
