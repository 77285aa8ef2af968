"""Deterministic batches: which samples (and which random augmentation) each step of each rank sees.

Everything is a function of ``(seed, epoch, step)``: the epoch's permutation comes from
``(seed, epoch)``, a global step takes the next ``global_batch`` indices of it, and rank ``r`` takes
its ``r``-th slice. Each sample's own random state (crop, caption choice) is seeded from
``(seed, epoch, index)`` inside whichever DataLoader worker decodes it. So a run resumed at step
``s`` sees exactly what an uninterrupted run sees from step ``s`` on, with any number of workers,
and 1 or N processes see the same global batches.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

_MASK64 = (1 << 64) - 1


def mix_seed(*parts: int) -> int:
    """A 63-bit hash (splitmix64 chain) of a few integers: the same in every process and run."""
    h = 0
    for p in parts:
        x = ((h ^ (int(p) & _MASK64)) + 0x9E3779B97F4A7C15) & _MASK64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
        h = x ^ (x >> 31)
    return h >> 1


def epoch_permutation(n: int, *, seed: int, epoch: int) -> torch.Tensor:
    """The order of the ``n`` samples in ``epoch`` (a LongTensor of length ``n``)."""
    g = torch.Generator().manual_seed(mix_seed(seed, epoch, 0x5EED))
    return torch.randperm(n, generator=g)


class StepBatchSampler(Sampler[list[int]]):
    """Index lists of one rank for steps ``start_step .. steps_per_epoch - 1`` of one epoch.

    A global batch is ``global_batch`` consecutive entries of the epoch permutation; the rank's
    share is its ``1/world_size`` slice. The incomplete last batch of an epoch is dropped.
    """

    def __init__(
        self,
        n: int,
        *,
        global_batch: int,
        seed: int,
        epoch: int,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
    ) -> None:
        if global_batch % world_size:
            raise ValueError(f"batch_size {global_batch} is not divisible by the {world_size} processes")
        if n < global_batch:
            raise ValueError(f"the dataset has {n} usable rows, fewer than one batch of {global_batch}")
        self.n, self.global_batch, self.seed, self.epoch = n, global_batch, seed, epoch
        self.rank, self.local = rank, global_batch // world_size
        self.start_step = start_step

    @staticmethod
    def steps_per_epoch(n: int, global_batch: int) -> int:
        return n // global_batch

    def __len__(self) -> int:
        return max(self.steps_per_epoch(self.n, self.global_batch) - self.start_step, 0)

    def __iter__(self) -> Iterator[list[int]]:
        perm = epoch_permutation(self.n, seed=self.seed, epoch=self.epoch)
        for step in range(self.start_step, self.steps_per_epoch(self.n, self.global_batch)):
            begin = step * self.global_batch + self.rank * self.local
            yield perm[begin : begin + self.local].tolist()


class SeededDataset(Dataset):
    """Wraps a map-style dataset so that item ``i`` of epoch ``e`` is drawn with every RNG
    (torch, numpy, random) seeded from ``(seed, e, i)``: augmentations are reproducible and do not
    depend on which worker decodes the sample or on where a run was resumed."""

    def __init__(self, dataset: Dataset, *, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        s = mix_seed(self.seed, self.epoch, index)
        torch.manual_seed(s)
        np.random.seed(s % (1 << 32))
        random.seed(s)
        return self.dataset[index]


class TrainData:
    """The endless stream of one rank's training batches, positioned by the global step.

    Map-style datasets follow :class:`StepBatchSampler`, so the step alone says where the stream
    is. Iterable datasets (tar shards) are read in their own deterministic order; their position
    (epoch, batches read in it) is :attr:`position`, and resuming replays the epoch up to it.
    ``collate`` turns a list of samples into a batch (e.g. ``clipforge.data.Collator``).
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        collate: Callable[[list[Any]], Any],
        global_batch: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        self.iterable = isinstance(dataset, IterableDataset)
        self.dataset = dataset if self.iterable else SeededDataset(dataset, seed=seed)
        self.collate, self.global_batch, self.seed = collate, global_batch, seed
        self.rank, self.world_size, self.workers, self.pin_memory = rank, world_size, workers, pin_memory
        if global_batch % world_size:
            raise ValueError(f"batch_size {global_batch} is not divisible by the {world_size} processes")
        self.local_batch = global_batch // world_size
        self.position: tuple[int, int] = (0, 0)  # iterable datasets: (epoch, batches read in it)

    @property
    def steps_per_epoch(self) -> int | None:
        return (
            None if self.iterable else StepBatchSampler.steps_per_epoch(len(self.dataset), self.global_batch)
        )

    def epoch_of(self, step: int) -> int:
        return self.position[0] if self.iterable else step // self.steps_per_epoch

    def _loader(self, epoch: int, **kwargs: Any) -> DataLoader:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)  # before the workers fork, so they see it
        return DataLoader(
            self.dataset,
            num_workers=self.workers,
            collate_fn=self.collate,
            pin_memory=self.pin_memory,
            generator=torch.Generator().manual_seed(mix_seed(self.seed, epoch, 0xDA7A)),
            **kwargs,
        )

    def batches(self, start_step: int, *, position: tuple[int, int] | None = None) -> Iterator[Any]:
        """Batches for steps ``start_step, start_step + 1, ...`` (forever)."""
        if self.iterable:
            yield from self._stream(position or (0, 0))
            return
        n, step = len(self.dataset), start_step
        while True:
            epoch, in_epoch = divmod(step, self.steps_per_epoch)
            sampler = StepBatchSampler(
                n,
                global_batch=self.global_batch,
                seed=self.seed,
                epoch=epoch,
                rank=self.rank,
                world_size=self.world_size,
                start_step=in_epoch,
            )
            for batch in self._loader(epoch, batch_sampler=sampler):
                yield batch
                step += 1

    def _stream(self, position: tuple[int, int]) -> Iterator[Any]:
        epoch, done = position
        while True:
            read = 0
            for batch in self._loader(epoch, batch_size=self.local_batch, drop_last=True):
                read += 1
                if read <= done:  # replaying up to where the interrupted run was
                    continue
                self.position = (epoch, read)
                yield batch
            if read == 0:
                raise ValueError(
                    f"epoch {epoch} of the training data gave no full batch of {self.local_batch}"
                )
            epoch, done = epoch + 1, 0
