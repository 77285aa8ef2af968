"""Deterministic batches: which samples (and which random augmentation) each step of each rank sees.

Everything is a function of ``(seed, epoch, step)``: the epoch's permutation comes from
``(seed, epoch)``, a global step takes the next ``global_batch`` indices of it, and rank ``r`` takes
its ``r``-th slice. Each sample's own random state (crop, caption choice) is seeded from
``(seed, epoch, index)`` inside whichever DataLoader worker decodes it. So a run resumed at step
``s`` sees exactly what an uninterrupted run sees from step ``s`` on, with any number of workers,
and 1 or N processes see the same global batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from ..data.protocols import Epochal, Resumable
from ..data.seeding import mix_seed, seed_all


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
        if isinstance(self.dataset, Epochal):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        seed_all(self.seed, self.epoch, index)
        return self.dataset[index]


@dataclass(frozen=True)
class StreamPosition:
    """Where one rank's stream of an iterable dataset stands: the epoch, the batches read in it,
    how many of them each (logical) DataLoader worker made, and the worker due next."""

    epoch: int
    batches: int
    worker_batches: tuple[int, ...]
    next_worker: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "worker_batches": list(self.worker_batches)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamPosition:
        return cls(int(data["epoch"]), int(data["batches"]), tuple(data["worker_batches"]), int(data["next_worker"]))


class _WorkerTagged:
    """Collate that also says which DataLoader worker made the batch (0 in the main process)."""

    def __init__(self, collate: Callable[[list[Any]], Any]) -> None:
        self.collate = collate

    def __call__(self, items: list[Any]) -> tuple[int, Any]:
        info = torch.utils.data.get_worker_info()
        return (info.id if info is not None else 0), self.collate(items)


class TrainData:
    """The endless stream of one rank's training batches, positioned by the global step.

    Map-style datasets follow :class:`StepBatchSampler`, so the step alone says where the stream
    is. Iterable datasets (tar shards) are read in their own deterministic order; where they stand
    is :attr:`position` (a :class:`StreamPosition`). Resuming from it tells the dataset
    (``set_resume``) how many samples each worker had delivered, and rotates the workers so the
    DataLoader's round-robin continues with the worker that was due: the batches that follow are
    those of the uninterrupted run. ``epoch_batches`` ends an epoch of an endless (resampled)
    stream after that many batches. ``collate`` turns a list of samples into a batch
    (e.g. ``clipforge.data.Collator``).
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
        epoch_batches: int | None = None,
    ) -> None:
        self.iterable = isinstance(dataset, IterableDataset)
        self.dataset = dataset if self.iterable else SeededDataset(dataset, seed=seed)
        self.collate, self.global_batch, self.seed = collate, global_batch, seed
        self.rank, self.world_size, self.workers, self.pin_memory = rank, world_size, workers, pin_memory
        if global_batch % world_size:
            raise ValueError(f"batch_size {global_batch} is not divisible by the {world_size} processes")
        self.local_batch = global_batch // world_size
        if not self.iterable and len(self.dataset) < global_batch:  # else no step would ever be drawn
            n, batch = len(self.dataset), f"`batch_size={global_batch}`"
            raise ValueError(f"the training data has {n} usable pairs, fewer than one batch ({batch})")
        self.epoch_batches = epoch_batches
        self.position = StreamPosition(0, 0, (0,) * max(workers, 1))

    @property
    def steps_per_epoch(self) -> int | None:
        return None if self.iterable else StepBatchSampler.steps_per_epoch(len(self.dataset), self.global_batch)

    def epoch_of(self, step: int) -> int:
        return self.position.epoch if self.iterable else step // self.steps_per_epoch

    def _loader(self, epoch: int, **kwargs: Any) -> DataLoader:
        if isinstance(self.dataset, Epochal):
            self.dataset.set_epoch(epoch)  # before the workers fork, so they see it
        kwargs.setdefault("collate_fn", self.collate)
        return DataLoader(
            self.dataset,
            num_workers=self.workers,
            pin_memory=self.pin_memory,
            generator=torch.Generator().manual_seed(mix_seed(self.seed, epoch, 0xDA7A)),
            **kwargs,
        )

    def batches(self, start_step: int, *, position: StreamPosition | None = None) -> Iterator[Any]:
        """Batches for steps ``start_step, start_step + 1, ...`` (forever)."""
        if self.iterable:
            yield from self._stream(position or self.position)
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

    def _stream(self, position: StreamPosition) -> Iterator[Any]:
        n_workers = max(self.workers, 1)
        if len(position.worker_batches) != n_workers:
            raise ValueError(
                f"the run streamed its data with workers={len(position.worker_batches) if self.workers else 0}; "
                f"resume it with the same number of workers (got {self.workers})"
            )
        resumable = isinstance(self.dataset, Resumable)
        if position.batches and not resumable:
            raise ValueError(f"{type(self.dataset).__name__} cannot resume mid-epoch (it has no set_resume)")
        while True:
            epoch, counts, rotate = position.epoch, list(position.worker_batches), position.next_worker
            if resumable:
                self.dataset.set_resume(skip=[c * self.local_batch for c in counts], rotate=rotate)
            read = position.batches
            done = self.epoch_batches is not None and read >= self.epoch_batches
            loader = self._loader(
                epoch, batch_size=self.local_batch, drop_last=True, collate_fn=_WorkerTagged(self.collate)
            )
            for worker, batch in [] if done else loader:
                logical = (worker + rotate) % n_workers
                counts[logical] += 1
                read += 1
                self.position = StreamPosition(epoch, read, tuple(counts), (logical + 1) % n_workers)
                yield batch
                if self.epoch_batches is not None and read >= self.epoch_batches:
                    break
            if read == 0:
                raise ValueError(f"epoch {epoch} of the training data gave no full batch of {self.local_batch}")
            position = StreamPosition(epoch + 1, 0, (0,) * n_workers)
