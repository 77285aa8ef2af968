"""Collation and skip accounting: skips counted in worker processes reach the main process."""

from __future__ import annotations

import io
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from clipforge.data import Batch, Collator, Skip, SkipStats, build_dataset, prepare_images
from clipforge.data.transforms import normalize_uint8


def fake_tokenizer(texts: list[str]) -> torch.Tensor:
    """Stand-in for the real tokenizer: (B, 4) ids made from the caption lengths."""
    return torch.tensor([[49406, len(t), len(t.split()), 49407] for t in texts], dtype=torch.long)


def to_tensor(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img.convert("RGB").resize((8, 8)))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0


def test_collator_drops_skips_tokenizes_and_counts() -> None:
    img = torch.zeros(3, 8, 8)
    samples = [
        (img, "a cat"),
        Skip("corrupt_image", "d.csv:3", "broken"),
        (img + 1, "two dogs here"),
        Skip("empty_caption", "d.csv:4"),
        Skip("corrupt_image", "d.csv:9"),
        None,
    ]
    batch = Collator(fake_tokenizer)(samples)
    assert isinstance(batch, Batch) and len(batch) == 2
    assert batch.images.shape == (2, 3, 8, 8) and batch.images[1].min() == 1
    assert batch.tokens.shape == (2, 4) and batch.tokens[:, 1].tolist() == [5, 13]
    assert batch.texts == ["a cat", "two dogs here"]
    assert batch.skipped == Counter({"corrupt_image": 2, "empty_caption": 1, "unknown": 1})
    assert batch.skip_notes[0] == "d.csv:3: corrupt_image (broken)"


def test_all_skipped_batch_is_empty_but_counted() -> None:
    batch = Collator(fake_tokenizer)([Skip("missing_image", "a"), Skip("missing_image", "b")])
    assert len(batch) == 0 and batch.images.numel() == 0 and batch.tokens.shape[0] == 0
    assert batch.skipped == Counter({"missing_image": 2})


def test_collator_rejects_a_tokenizer_with_the_wrong_batch_size() -> None:
    with pytest.raises(ValueError, match="tokenizer returned 1 rows for 2 captions"):
        Collator(lambda texts: torch.zeros(1, 4, dtype=torch.long))([(torch.zeros(3), "a"), (torch.zeros(3), "b")])


def test_skip_stats_counts_logs_first_few_and_summarises(caplog: pytest.LogCaptureFixture) -> None:
    stats = SkipStats(log_first=2)
    with caplog.at_level(logging.WARNING, logger="clipforge.data.skips"):
        stats.update(Counter({"corrupt_image": 3}), ["x.jpg: corrupt_image", "y.jpg: corrupt_image", "z.jpg"])
        stats.record(Skip("empty_caption", "d.csv:2"))
        stats.extend([Skip("malformed_row", "d.csv:5")] * 2)
    assert stats.total == 6
    assert stats.summary() == "skipped 6 samples: corrupt_image 3, malformed_row 2, empty_caption 1"
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 2 and "x.jpg" in logged[0] and "y.jpg" in logged[1]
    restored = SkipStats()
    restored.load_state_dict(stats.state_dict())
    assert restored.counts == stats.counts
    assert SkipStats().summary() == "no samples skipped"


def test_skip_counts_from_worker_processes_reach_the_main_process(tmp_path: Path) -> None:
    lines = ["filepath,title"]
    for i in range(24):
        name = f"{i}.png"
        if i % 6 == 1:
            (tmp_path / name).write_bytes(b"garbage")  # corrupt: 4 of them
        elif i % 6 == 2:
            pass  # missing: 4 of them
        else:
            buf = io.BytesIO()
            Image.new("RGB", (9, 9), (i, i, i)).save(buf, format="PNG")
            (tmp_path / name).write_bytes(buf.getvalue())
        lines.append(f"{name},image {i}")
    lines.append("only_one_column")  # malformed at load time
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    ds = build_dataset(tmp_path / "d.csv", transform=to_tensor)
    stats = SkipStats()
    stats.extend(ds.load_skips)
    loader = DataLoader(ds, batch_size=5, num_workers=2, collate_fn=Collator(fake_tokenizer))
    n_images = 0
    for batch in loader:
        stats.update(batch.skipped, batch.skip_notes)
        n_images += len(batch)
    assert n_images == 16
    assert stats.counts == Counter({"corrupt_image": 4, "missing_image": 4, "malformed_row": 1})
    assert stats.summary().startswith("skipped 9 samples")


def test_prepare_images_normalises_uint8_batches_and_passes_float_through() -> None:
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    u8 = torch.randint(0, 256, (2, 4, 4, 3), dtype=torch.uint8)  # (B, H, W, 3)
    out = prepare_images(u8, mean=mean, std=std, device="cpu")
    assert out.shape == (2, 3, 4, 4) and out.dtype == torch.float32
    expected = (u8.permute(0, 3, 1, 2).float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(
        1, 3, 1, 1
    )
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out, normalize_uint8(u8, mean, std))
    f = torch.randn(2, 3, 4, 4)
    assert prepare_images(f, mean=mean, std=std) is f


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs an accelerator")
def test_batch_pin_memory() -> None:
    batch = Collator(fake_tokenizer)([(torch.zeros(3, 2, 2), "a")])
    assert batch.pin_memory().images.is_pinned()


def test_skips_are_counted_over_the_whole_run_once_per_sample(caplog: pytest.LogCaptureFixture) -> None:
    stats = SkipStats()
    bad = Skip("corrupt_image", "d.csv:3", "broken")
    collate = Collator(fake_tokenizer)
    with caplog.at_level(logging.WARNING, logger="clipforge.data.skips"):
        for _epoch in range(3):  # the same bad sample every epoch: one skip, logged once
            batch = collate([bad, (torch.zeros(3, 4, 4), "a")])
            stats.update(batch.skipped, batch.skip_notes, batch.skip_keys)
        assert stats.counts == Counter({"corrupt_image": 1})
        gone = collate([Skip("missing_image", "d.csv:7", "x.png"), None])  # a file deleted in epoch 4
        stats.update(gone.skipped, gone.skip_notes, gone.skip_keys)
    assert stats.counts == Counter({"corrupt_image": 1, "missing_image": 1, "unknown": 1})
    assert sum("d.csv:3" in r.getMessage() for r in caplog.records) == 1
    other = SkipStats()  # another rank met the same bad sample and one of its own
    other.update(Counter({"corrupt_image": 2}), [], [("corrupt_image", "d.csv:3"), ("corrupt_image", "d.csv:9")])
    total = SkipStats()
    total.merge(stats.state_dict())
    total.merge(other.state_dict())
    assert total.counts == Counter({"corrupt_image": 2, "missing_image": 1, "unknown": 1})
    restored = SkipStats()
    restored.load_state_dict(stats.state_dict())
    assert restored.seen == stats.seen and restored.counts == stats.counts
    restored.load_state_dict({"corrupt_image": 4})  # checkpoints from before keys were kept
    assert restored.counts == Counter({"corrupt_image": 4}) and restored.seen == set()
