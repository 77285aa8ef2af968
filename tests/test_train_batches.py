"""The data order is a pure function of (seed, epoch, step); ranks split each global batch."""

import torch
from train_helpers import ColourPairs

from clipforge.train.batches import SeededDataset, StepBatchSampler, TrainData, epoch_permutation, mix_seed


def test_permutation_depends_on_seed_and_epoch_only():
    p = epoch_permutation(100, seed=3, epoch=1)
    assert torch.equal(p, epoch_permutation(100, seed=3, epoch=1))
    assert sorted(p.tolist()) == list(range(100))
    assert not torch.equal(p, epoch_permutation(100, seed=3, epoch=2))
    assert not torch.equal(p, epoch_permutation(100, seed=4, epoch=1))
    assert mix_seed(1, 2) != mix_seed(2, 1) and 0 <= mix_seed(5) < 2**63


def test_ranks_partition_the_global_batch_and_start_step_skips_ahead():
    whole = list(StepBatchSampler(50, global_batch=8, seed=0, epoch=0))
    assert len(whole) == 6  # 50 // 8, the incomplete batch is dropped
    r0 = list(StepBatchSampler(50, global_batch=8, seed=0, epoch=0, rank=0, world_size=2))
    r1 = list(StepBatchSampler(50, global_batch=8, seed=0, epoch=0, rank=1, world_size=2))
    for g, a, b in zip(whole, r0, r1, strict=True):
        assert g == a + b
    later = list(StepBatchSampler(50, global_batch=8, seed=0, epoch=0, start_step=4))
    assert later == whole[4:]


def test_seeded_samples_do_not_depend_on_access_order():
    ds = SeededDataset(ColourPairs(32), seed=7)
    first = ds[5][0].clone()
    torch.rand(100)  # disturb the global RNG
    _ = ds[6]
    assert torch.equal(ds[5][0], first)
    ds.set_epoch(1)
    assert not torch.equal(ds[5][0], first)  # a new epoch, a new augmentation


def test_resumed_stream_equals_uninterrupted_stream():
    def collate(items):
        return torch.stack([i[0] for i in items]), [i[1] for i in items]

    data = TrainData(ColourPairs(40), collate=collate, global_batch=8, seed=1)
    it = data.batches(0)
    straight = [next(it) for _ in range(12)]  # 5 steps per epoch: crosses two epoch boundaries
    resumed = data.batches(7)
    for want in straight[7:]:
        got = next(resumed)
        assert torch.equal(got[0], want[0]) and got[1] == want[1]
    with_workers = TrainData(ColourPairs(40), collate=collate, global_batch=8, seed=1, workers=1).batches(3)
    for want in straight[3:6]:
        assert torch.equal(next(with_workers)[0], want[0])
