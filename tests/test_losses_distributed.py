"""Two gloo processes, each with half the batch, reproduce the single-process loss and gradients.

Convention checked (see clipforge.losses.distributed): mean over ranks of the local losses equals
the full-batch loss; a rank's feature gradient divided by the world size equals the full-batch
gradient of its slice; the mean over ranks of the logit_scale / logit_bias gradients equals the
full-batch gradient (what DDP's gradient averaging produces).
"""

import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from clipforge.losses import all_gather_with_grad, clip_loss, siglip_loss

WORLD = 2
LOCAL = 5  # odd local batch: global 10, chunk 3 does not divide it
DIM = 6
CASES = [  # (name, chunk_size, dtype)
    ("clip", None, torch.float64),
    ("clip", 3, torch.float64),
    ("clip", 64, torch.float64),
    ("clip", 3, torch.float32),
    ("clip-smoothed", None, torch.float64),  # label smoothing 0.2
    ("clip-smoothed", 3, torch.float64),
    ("siglip", None, torch.float64),
    ("siglip", 3, torch.float64),
    ("siglip", 4, torch.float32),
]
TIMEOUT_S = 120.0


def _global_batch(dtype: torch.dtype):
    g = torch.Generator().manual_seed(7)
    img = F.normalize(torch.randn(WORLD * LOCAL, DIM, generator=g, dtype=torch.float64), dim=-1)
    txt = F.normalize(img + 0.8 * torch.randn(WORLD * LOCAL, DIM, generator=g, dtype=torch.float64), dim=-1)
    return img.to(dtype), txt.to(dtype)


def _run_case(name, chunk_size, dtype, img, txt, *, distributed):
    img, txt = img.clone().requires_grad_(), txt.clone().requires_grad_()
    scale = torch.tensor(1 / 0.07, dtype=dtype, requires_grad=True)
    bias = torch.tensor(-3.0, dtype=dtype, requires_grad=True)
    if name.startswith("clip"):
        smoothing = 0.2 if name == "clip-smoothed" else 0.0
        loss = clip_loss(img, txt, scale, chunk_size=chunk_size, distributed=distributed, label_smoothing=smoothing)
        leaves = [img, txt, scale]
    else:
        loss = siglip_loss(img, txt, scale, bias, chunk_size=chunk_size, distributed=distributed)
        leaves = [img, txt, scale, bias]
    loss.backward()
    return [loss.detach()] + [t.grad.detach() for t in leaves]


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=60))
    torch.set_num_threads(1)
    results = {}
    local = slice(rank * LOCAL, (rank + 1) * LOCAL)
    for name, chunk_size, dtype in CASES:
        img, txt = _global_batch(dtype)
        results[(name, chunk_size, dtype)] = _run_case(name, chunk_size, dtype, img[local], txt[local],
                                                       distributed=True)
    # the gather on its own: values and the summed gradient of the local slice
    x = torch.full((2, 3), float(rank + 1), requires_grad=True)
    gathered = all_gather_with_grad(x)  # (4, 3)
    (gathered * torch.arange(1.0, 5.0)[:, None]).sum().backward()
    results["gather"] = [gathered.detach(), x.grad]
    # unequal local batches must fail loudly on every rank
    n = 4 if rank == 0 else 3
    try:
        clip_loss(torch.randn(n, DIM), torch.randn(n, DIM), 10.0, distributed=True)
        results["unequal"] = "no error"
    except ValueError as err:
        results["unequal"] = str(err)
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


def _spawn(tmp_path: Path) -> list[dict]:
    ctx = mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=False)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not ctx.join(timeout=1.0):
            if time.monotonic() > deadline:
                pytest.fail(f"distributed workers did not finish within {TIMEOUT_S:.0f} s (hang?)")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.distributed
def test_two_gloo_ranks_match_single_process(tmp_path):
    ranks = _spawn(tmp_path)
    for name, chunk_size, dtype in CASES:
        tol = 1e-10 if dtype == torch.float64 else 1e-5
        full = _run_case(name, chunk_size, dtype, *_global_batch(dtype), distributed=False)
        case = f"{name} chunk={chunk_size} {dtype}"
        per_rank = [r[(name, chunk_size, dtype)] for r in ranks]
        mean_loss = sum(r[0] for r in per_rank) / WORLD
        torch.testing.assert_close(mean_loss, full[0], rtol=tol, atol=0, msg=f"{case}: loss")
        for k, what in ((1, "image"), (2, "text")):
            got = torch.cat([r[k] for r in per_rank]) / WORLD
            torch.testing.assert_close(got, full[k], rtol=tol, atol=tol * full[k].abs().max().item(),
                                       msg=f"{case}: grad {what}")
        for k in range(3, len(full)):  # logit_scale (and logit_bias): DDP averages over ranks
            got = sum(r[k] for r in per_rank) / WORLD
            torch.testing.assert_close(got, full[k], rtol=tol, atol=0, msg=f"{case}: grad scalar {k}")

    expected = torch.tensor([[1.0] * 3, [1.0] * 3, [2.0] * 3, [2.0] * 3])
    for rank, r in enumerate(ranks):
        gathered, grad = r["gather"]
        torch.testing.assert_close(gathered, expected)
        # each rank's upstream grad for row i is (i + 1); summed over the 2 ranks, local slice kept
        want = 2 * torch.arange(1.0, 5.0)[rank * 2 : rank * 2 + 2, None].expand(2, 3)
        torch.testing.assert_close(grad, want)
        assert "same local batch" in r["unequal"], r["unequal"]
