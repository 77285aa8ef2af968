"""clip_loss / siglip_loss: the definition, the seeds' worked example, and chunked == naive."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipforge.losses import clip_loss, infonce_terms, pairwise_sigmoid_loss, siglip_loss


def _features(n: int, d: int, dtype: torch.dtype, *, seed: int = 0, normalise: bool = True):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(n, d, generator=g, dtype=dtype)
    txt = img + 0.7 * torch.randn(n, d, generator=g, dtype=dtype)  # correlated pairs
    if normalise:
        img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    return img.requires_grad_(), txt.requires_grad_()


def _loss_and_grads(fn, img, txt, *scalars, **options):
    loss = fn(img, txt, *scalars, **options)
    grads = torch.autograd.grad(loss, [img, txt, *scalars])
    return loss.detach(), [g.detach() for g in grads]


def _assert_rel(actual: torch.Tensor, expected: torch.Tensor, tol: float, what: str, *, floor: float = 1e-2):
    """Max-abs error relative to the largest expected value. Values below ``floor`` count as ``floor``,
    so that an expected exact zero (a single pair: loss 0, d loss / d scale 0) tolerates rounding."""
    err = (actual - expected).abs().max().item()
    ref = expected.abs().max().item()
    assert err <= tol * max(ref, floor), f"{what}: max abs error {err:.3e} vs max abs value {ref:.3e}"


# -- the seeds' worked example ---------------------------------------------------------------------

def _worked_example_by_hand() -> float:
    """The definition written out: mean of the two cross-entropies, log-sum-exp by hand."""
    tau = 0.07
    image = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    text = [[0.9, 0.1, 0.0], [0.1, 0.8, 0.1], [0.0, 0.3, 0.7]]
    # unnormalised dot products over tau
    s = [[sum(a * b for a, b in zip(i, t, strict=True)) / tau for t in text] for i in image]

    def log_sum_exp(values):
        m = max(values)
        return m + math.log(sum(math.exp(v - m) for v in values))

    # -log(exp(s_ii) / sum_j exp(s_ij)) = log_sum_exp_j(s_ij) - s_ii  (the positive IS exponentiated)
    image_to_text = sum(log_sum_exp(s[i]) - s[i][i] for i in range(3)) / 3
    text_to_image = sum(log_sum_exp([s[i][j] for i in range(3)]) - s[j][j] for j in range(3)) / 3
    return (image_to_text + text_to_image) / 2


@pytest.mark.parametrize("chunk_size", [None, 1, 2, 64])
def test_worked_example_matches_hand_computation(chunk_size):
    expected = _worked_example_by_hand()
    # by hand: image->text 3.6128092e-4, text->image 1.1475368e-3, loss = 7.544088750606e-4
    assert expected == pytest.approx(7.544088750606e-4, rel=1e-9)
    image = torch.eye(3, dtype=torch.float64)
    text = torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.8, 0.1], [0.0, 0.3, 0.7]], dtype=torch.float64)
    loss = clip_loss(image, text, torch.tensor(1 / 0.07, dtype=torch.float64), chunk_size=chunk_size)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    # The seed's buggy variant log(s_ii / sum_j exp(s_ij)) gives a very different number.
    s = (image @ text.T / 0.07).numpy()
    buggy = -np.mean(np.log(np.diag(s) / np.exp(s).sum(1)))
    assert abs(buggy - expected) > 1.0


def test_naive_clip_equals_cross_entropy_definition():
    img, txt = _features(13, 8, torch.float64)
    scale = torch.tensor(14.3, dtype=torch.float64)
    logits = scale * img @ txt.T
    labels = torch.arange(13)
    expected = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    assert clip_loss(img, txt, scale).item() == pytest.approx(expected.item(), rel=1e-12)
    assert clip_loss(img, txt, 14.3).item() == pytest.approx(expected.item(), rel=1e-12)  # float scale


def test_features_are_not_renormalised():
    img, txt = _features(6, 4, torch.float64)
    assert clip_loss(3 * img, txt, 10.0).item() != pytest.approx(clip_loss(img, txt, 10.0).item())


def test_siglip_naive_equals_definition():
    img, txt = _features(7, 5, torch.float64)
    s, b = 10.0, -3.0
    x = (s * img @ txt.T + b).detach().numpy()
    z = 2 * np.eye(7) - 1
    expected = -np.log(1 / (1 + np.exp(-z * x))).sum() / 7  # -1/N sum_ij log sigmoid(z_ij x_ij)
    assert siglip_loss(img, txt, s, b).item() == pytest.approx(expected, rel=1e-12)


# -- chunked == naive --------------------------------------------------------------------------------

SIZES = [(37, 8), (37, 100), (50, 7), (64, 16), (1, 4)]  # odd sizes, chunk > batch, single pair


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("n", "chunk_size"), SIZES)
def test_chunked_clip_matches_naive(dtype, n, chunk_size):
    img, txt = _features(n, 12, dtype, seed=n)
    scale = torch.tensor(1 / 0.07, dtype=dtype, requires_grad=True)
    naive, naive_grads = _loss_and_grads(clip_loss, img, txt, scale)
    chunked, chunked_grads = _loss_and_grads(clip_loss, img, txt, scale, chunk_size=chunk_size)
    _assert_rel(chunked, naive, 1e-5, "loss", floor=1.0)
    for name, got, want in zip(("image", "text", "logit_scale"), chunked_grads, naive_grads, strict=True):
        _assert_rel(got, want, 1e-5, f"grad {name}")
        assert got.dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("n", "chunk_size"), SIZES)
def test_chunked_siglip_matches_naive(dtype, n, chunk_size):
    img, txt = _features(n, 12, dtype, seed=n)
    scale = torch.tensor(10.0, dtype=dtype, requires_grad=True)
    bias = torch.tensor(-4.0, dtype=dtype, requires_grad=True)
    naive, naive_grads = _loss_and_grads(siglip_loss, img, txt, scale, bias)
    chunked, chunked_grads = _loss_and_grads(siglip_loss, img, txt, scale, bias, chunk_size=chunk_size)
    _assert_rel(chunked, naive, 1e-5, "loss", floor=1.0)
    names = ("image", "text", "logit_scale", "logit_bias")
    for name, got, want in zip(names, chunked_grads, naive_grads, strict=True):
        _assert_rel(got, want, 1e-5, f"grad {name}")


def test_gradcheck_chunked_kernels():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(7, 3, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(9, 3, dtype=torch.float64, generator=g, requires_grad=True)
    scale = torch.tensor(2.5, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)

    def terms(a, b, scale):
        return infonce_terms(a, b, scale, positive_offset=1, chunk_size=4)

    def sig(a, b, scale, bias):
        return pairwise_sigmoid_loss(a, b, scale, bias, positive_offset=2, chunk_size=4)

    assert torch.autograd.gradcheck(terms, (a, b, scale))
    assert torch.autograd.gradcheck(sig, (a, b, scale, bias))


@pytest.mark.parametrize("offset", [0, 3, 6])
def test_rectangular_terms_match_torch(offset):
    a, b = torch.randn(5, 4, dtype=torch.float64), torch.randn(11, 4, dtype=torch.float64)
    scale = torch.tensor(3.0, dtype=torch.float64)
    rows, cols, positives = infonce_terms(a, b, scale, positive_offset=offset, chunk_size=3)
    logits = scale * a @ b.T
    torch.testing.assert_close(rows, logits.logsumexp(1))
    torch.testing.assert_close(cols, logits.logsumexp(0))
    torch.testing.assert_close(positives, logits.diagonal(offset))
    with pytest.raises(ValueError, match="positive_offset"):
        infonce_terms(a, b, scale, positive_offset=7, chunk_size=3)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_chunked_is_safe_at_large_scale(dtype):
    """Rows whose logits are far below the global maximum must keep their precision."""
    img, txt = _features(20, 6, dtype, seed=3, normalise=False)
    with torch.no_grad():
        img[0] *= 30.0  # row 0 and column 0 dwarf every other logit (about 1e4 apart)
        txt[0] *= 30.0
    scale = torch.tensor(100.0, dtype=dtype, requires_grad=True)
    naive, naive_grads = _loss_and_grads(clip_loss, img, txt, scale)
    chunked, chunked_grads = _loss_and_grads(clip_loss, img, txt, scale, chunk_size=6)
    assert torch.isfinite(chunked) and all(torch.isfinite(g).all() for g in chunked_grads)
    _assert_rel(chunked, naive, 1e-5, "loss", floor=1.0)
    for got, want in zip(chunked_grads, naive_grads, strict=True):
        _assert_rel(got, want, 1e-5, "grad")
    bias = torch.tensor(-10.0, dtype=dtype, requires_grad=True)
    naive, naive_grads = _loss_and_grads(siglip_loss, img, txt, scale, bias)
    chunked, chunked_grads = _loss_and_grads(siglip_loss, img, txt, scale, bias, chunk_size=6)
    assert torch.isfinite(chunked)
    _assert_rel(chunked, naive, 1e-5, "siglip loss")
    for got, want in zip(chunked_grads, naive_grads, strict=True):
        _assert_rel(got, want, 1e-5, "siglip grad")


def test_chunked_saves_only_linear_memory_for_backward():
    n, d = 96, 8
    img, txt = _features(n, d, torch.float32)
    scale = torch.tensor(14.0, requires_grad=True)
    largest = {}

    def run(name, fn):
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
            fn()
        largest[name] = max(sizes)

    run("naive", lambda: clip_loss(img, txt, scale))
    run("clip", lambda: clip_loss(img, txt, scale, chunk_size=16))
    run("siglip", lambda: siglip_loss(img, txt, scale, -5.0, chunk_size=16))
    assert largest["naive"] >= n * n  # the naive path keeps the logits
    assert largest["clip"] <= n * d and largest["siglip"] <= n * d


def test_frozen_text_tower_and_no_grad():
    img, _ = _features(19, 6, torch.float32)
    txt = _features(19, 6, torch.float32, seed=5)[1].detach()  # locked tower: no grad
    scale = torch.tensor(20.0)
    for fn, extra in ((clip_loss, ()), (siglip_loss, (-2.0,))):
        naive = fn(img, txt, scale, *extra)
        chunked = fn(img, txt, scale, *extra, chunk_size=5)
        (g_naive,) = torch.autograd.grad(naive, img)
        (g_chunked,) = torch.autograd.grad(chunked, img)
        _assert_rel(g_chunked, g_naive, 1e-5, fn.__name__)
        with torch.no_grad():
            _assert_rel(fn(img, txt, scale, *extra, chunk_size=5), naive.detach(), 1e-5, "no_grad")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_features_are_upcast(dtype):
    img, txt = _features(10, 8, torch.float32)
    img_h, txt_h = img.detach().to(dtype).requires_grad_(), txt.detach().to(dtype).requires_grad_()
    loss = clip_loss(img_h, txt_h, 14.0, chunk_size=4)
    assert loss.dtype == torch.float32
    loss.backward()
    assert img_h.grad.dtype == dtype and torch.isfinite(img_h.grad.float()).all()
    assert loss.item() == pytest.approx(clip_loss(img_h.float(), txt_h.float(), 14.0).item(), rel=1e-5)


def test_bad_inputs_raise_clear_errors():
    img, txt = _features(4, 3, torch.float32)
    with pytest.raises(ValueError, match="equal shapes"):
        clip_loss(img, txt[:3], 10.0)
    with pytest.raises(ValueError, match=r"\(batch, dim\)"):
        clip_loss(img[None], txt[None], 10.0)
    with pytest.raises(ValueError, match="chunk_size"):
        clip_loss(img, txt, 10.0, chunk_size=0)
    with pytest.raises(ValueError, match="single value"):
        siglip_loss(img, txt, torch.ones(2), -1.0)
    with pytest.raises(TypeError, match="floating point"):
        clip_loss(img.long(), txt.long(), 10.0)
    with pytest.raises(RuntimeError, match="init_process_group"):
        clip_loss(img, txt, 10.0, distributed=True)


@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
@pytest.mark.parametrize("chunk_size", [None, 3])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_every_loss_chunked_or_not_under_fp32_and_bf16_autocast(loss_name, chunk_size, precision):
    """What training does: features from layers run under autocast (bf16 under --precision bf16),
    the loss inside the same autocast region, backward outside. Chunked must match the materialised
    loss in each precision (issue 13: chunked SigLIP crashed with a dtype mismatch under bf16)."""
    from clipforge.losses import clip_loss, siglip_loss

    def run(chunk):
        torch.manual_seed(0)
        x_img, x_txt = torch.randn(10, 12), torch.randn(10, 12)
        w_img = torch.randn(12, 8, requires_grad=True)
        w_txt = torch.randn(12, 8, requires_grad=True)
        scale = torch.tensor(10.0, requires_grad=True)
        bias = torch.tensor(-5.0, requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            img = F.normalize(x_img @ w_img, dim=-1)  # (10, 8), bf16 under autocast
            txt = F.normalize(x_txt @ w_txt, dim=-1)
            if precision == "bf16":
                assert (x_img @ w_img).dtype == torch.bfloat16
            if loss_name == "clip":
                loss = clip_loss(img, txt, scale, chunk_size=chunk)
            else:
                loss = siglip_loss(img, txt, scale, bias, chunk_size=chunk)
        loss.backward()
        grads = [w_img.grad, w_txt.grad, scale.grad] + ([bias.grad] if loss_name == "siglip" else [])
        return loss.detach(), grads

    loss, grads = run(chunk_size)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    ref_loss, ref_grads = run(None)
    tol = 1e-5  # the losses compute in float32 even inside a bf16 autocast region
    torch.testing.assert_close(loss, ref_loss, rtol=tol, atol=tol)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)
