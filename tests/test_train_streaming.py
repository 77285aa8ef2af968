"""Streamed tar shards (local, file://, pipe:) in epoch and resampled modes resume exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_data_formats import png_bytes, write_tar
from train_helpers import write_tiny_model

from clipforge.data import build_dataset
from clipforge.data.shard_io import PipeError, expand_urls, open_shard
from clipforge.data.skips import Skip
from clipforge.train.batches import StreamPosition, TrainData

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (200, 30, 200), (30, 200, 200)]


def write_shards(root: Path, sizes: tuple[int, ...] = (7, 5, 9)) -> list[Path]:
    """Uneven shards (so workers run dry at different moments) of colour patches with captions."""
    paths, n = [], 0
    for s, size in enumerate(sizes):
        members = []
        for _ in range(size):
            name = ("red", "green", "blue", "yellow", "purple", "cyan")[n % 6]
            members += [
                (f"{n:04d}.png", png_bytes(COLOURS[n % 6], (14, 14))),
                (f"{n:04d}.txt", f"a {name} patch {n}".encode()),
            ]
            n += 1
        paths.append(write_tar(root / f"s{s}.tar", members))
    return paths


def augment(image):
    """A transform that draws from the global RNG, like a random crop."""
    x = torch.from_numpy(__import__("numpy").asarray(image, dtype="float32")).permute(2, 0, 1) / 255
    return x + 0.1 * torch.rand_like(x)


def collate(items):
    kept = [i for i in items if not isinstance(i, Skip)]
    return torch.stack([i[0] for i in kept]), [i[1] for i in kept]


def sources(root: Path) -> dict[str, str]:
    return {
        "local": f"{root}/s{{0..2}}.tar",
        "file": f"file://{root}/s{{0..2}}.tar",
        "pipe": f"pipe:cat {root}/s{{0..1}}.tar::pipe:cat {root}/s2.tar",
    }


def _stream(source: str, *, workers: int, resampled: bool = False, epoch_batches: int | None = None):
    ds = build_dataset(source, transform=augment, seed=3, shuffle_buffer=4, resampled=resampled)
    return TrainData(ds, collate=collate, global_batch=3, seed=3, workers=workers, epoch_batches=epoch_batches)


def _same(a, b) -> bool:
    return torch.equal(a[0], b[0]) and a[1] == b[1]


def test_urls_expand_and_pipe_errors_are_reported(tmp_path):
    assert expand_urls("pipe:cat a{0..1}.tar::b.tar") == ["pipe:cat a0.tar", "pipe:cat a1.tar", "b.tar"]
    with pytest.raises(PipeError, match="exited with status 3"), open_shard("pipe:exit 3") as f:
        f.read()
    ds = build_dataset(f"pipe:cat {tmp_path}/missing.tar", transform=augment, shuffle_buffer=0)
    (skip,) = list(ds)
    assert isinstance(skip, Skip) and skip.reason == "truncated_shard"


@pytest.mark.parametrize("kind", ["local", "file", "pipe"])
@pytest.mark.full_suite
def test_streamed_shards_resume_exactly(tmp_path, kind):
    write_shards(tmp_path)
    source = sources(tmp_path)[kind]
    data = _stream(source, workers=2)
    it = data.batches(0)
    straight, positions = [], []
    for _ in range(13):  # 21 samples -> 6 full batches of 3 per epoch at most: crosses 2 epochs
        straight.append(next(it))
        positions.append(data.position)
    assert positions[-1].epoch == 2
    captions = [c for batch in straight[:6] for c in batch[1]]
    assert len(set(captions)) == len(captions)  # an epoch reads each sample once
    for k in (0, 2, 5, 8):  # resume after batch k: in an epoch, at its end, in the next one
        resumed = _stream(source, workers=2).batches(k + 1, position=positions[k])
        for want in straight[k + 1 : k + 5]:
            assert _same(next(resumed), want), f"{kind}: resumed after batch {k} differs"


@pytest.mark.full_suite
def test_resampled_stream_resumes_exactly_and_differs_per_epoch(tmp_path):
    write_shards(tmp_path)
    source = sources(tmp_path)["pipe"]
    data = _stream(source, workers=2, resampled=True, epoch_batches=4)
    it = data.batches(0)
    straight, positions = [], []
    for _ in range(10):
        straight.append(next(it))
        positions.append(data.position)
    assert [p.epoch for p in positions] == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert not _same(straight[0], straight[4])  # a new epoch draws new shards
    for k in (1, 3, 6):
        resumed = _stream(source, workers=2, resampled=True, epoch_batches=4).batches(k + 1, position=positions[k])
        for want in straight[k + 1 : k + 4]:
            assert _same(next(resumed), want)


def test_resume_with_another_worker_count_is_refused(tmp_path):
    write_shards(tmp_path)
    position = StreamPosition(0, 2, (1, 1))
    with pytest.raises(ValueError, match="same number of workers"):
        next(_stream(sources(tmp_path)["local"], workers=0).batches(2, position=position))


@pytest.mark.slow
def test_fit_on_pipe_shards_resumes_to_identical_weights(tmp_path):
    from safetensors.torch import load_file

    from clipforge.train import TrainConfig
    from clipforge.train.loop import fit

    write_shards(tmp_path / "shards", sizes=(10, 8, 12))
    model = write_tiny_model(tmp_path / "tiny.json", image_size=16, vocab_size=49408, context_length=16)
    cfg = TrainConfig.from_flat(
        data=f"pipe:cat {tmp_path}/shards/s{{0..2}}.tar",
        model=str(model),
        steps=6,
        batch_size=4,
        warmup_steps=1,
        save_every=2,
        keep_last=5,
        log_every=1,
        precision="fp32",
        workers=2,
        out=str(tmp_path / "runs"),
        progress=False,
    )
    straight = fit(cfg.replace(name="straight"))
    cut = fit(cfg.replace(name="cut"))
    for path in (cut.run_dir / "checkpoints").glob("step-00000[46].*"):  # as if killed after step 3
        path.unlink()
    cut.model_path.unlink()
    resumed = fit(cfg.replace(name="cut"), resume=True)
    a, b = load_file(straight.model_path), load_file(resumed.model_path)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_fsspec_urls_stream_and_a_missing_fsspec_is_an_install_hint(tmp_path, monkeypatch):
    fsspec = pytest.importorskip("fsspec", reason="fsspec not installed (pip install 'clipforge[stream]')")
    import sys

    from clipforge.optional import MissingExtra

    paths = write_shards(tmp_path)
    memory = fsspec.filesystem("memory")
    for p in paths:  # an object store stand-in: fsspec's in-process memory file system
        memory.pipe(f"/bucket/{p.name}", p.read_bytes())
    try:
        local, remote = (
            _stream(src, workers=0).batches(0) for src in (sources(tmp_path)["local"], "memory://bucket/s{0..2}.tar")
        )
        for _ in range(7):  # past the end of the first epoch
            assert _same(next(local), next(remote))
    finally:
        memory.rm("/bucket", recursive=True)
    monkeypatch.setitem(sys.modules, "fsspec", None)
    with pytest.raises(MissingExtra, match=r"pip install 'clipforge\[stream\]'"):
        list(build_dataset("s3://bucket/s0.tar", transform=augment, shuffle_buffer=0))
