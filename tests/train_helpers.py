"""Small stand-ins shared by the training tests: a tiny model file and tiny image-text datasets (not a test module)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from factories import tiny_model_config
from torch.utils.data import Dataset

from clipforge.train.config import TrainConfig

COLOURS = {
    "red": (0.9, 0.1, 0.1),
    "green": (0.1, 0.8, 0.2),
    "blue": (0.1, 0.2, 0.9),
    "yellow": (0.9, 0.9, 0.1),
    "purple": (0.6, 0.1, 0.7),
    "orange": (1.0, 0.55, 0.0),
    "white": (0.95, 0.95, 0.95),
    "black": (0.05, 0.05, 0.05),
}


def train_args(
    data: Path, model: Path, out: Path, name: str, *extra: str, steps: int, batch_size: int, warmup_steps: int
) -> list[str]:
    """The ``clipforge train`` arguments the training tests share (after ``python -m clipforge``, or
    for ``main``): ``data`` and ``model``, a 600-token BPE vocabulary learnt from the captions, the
    run ``out/name``, no loader workers or progress bar, a log line every step; then ``extra``, last
    so that it can override any of these."""
    return [
        "train", "--data", str(data), "--model", str(model), "--tokenizer", "train", "--vocab-size", "600",
        "--steps", str(steps), "--batch-size", str(batch_size), "--warmup-steps", str(warmup_steps),
        "--out", str(out), "--name", name, "--workers", "0", "--no-progress", "--log-every", "1", *extra,
    ]  # fmt: skip


def write_tiny_model(path: Path, **overrides) -> Path:
    """``path`` holding the training tests' model as JSON (for ``--model``): the factory's shrunk
    ``vit-tiny`` with a 16-d embedding and 24-token texts (the sizes the training tests' thresholds
    were set on), named ``test-tiny``, then ``overrides`` (:func:`factories.tiny_model_config`'s)."""
    defaults = {"embed_dim": 16, "context_length": 24, "name": "test-tiny"}
    path.write_text(json.dumps(tiny_model_config(**{**defaults, **overrides}).to_dict()))
    return path


class ColourPairs(Dataset):
    """``(image (3, S, S), caption)``: a colour patch with random noise (drawn from the global torch
    RNG, like a random augmentation) and a caption naming the colour."""

    def __init__(self, n: int = 256, *, size: int = 16) -> None:
        self.n, self.size = n, size
        self.names = list(COLOURS)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        name = self.names[i % len(self.names)]
        base = torch.tensor(COLOURS[name]).view(3, 1, 1).expand(3, self.size, self.size)
        image = (base + 0.3 * torch.rand(3, self.size, self.size) - 0.15 - 0.45) / 0.27  # roughly normalised
        size_word = ("small", "large")[(i // len(self.names)) % 2]
        return image, f"a {size_word} {name} square"


def random_tokens(n: int, *, vocab_size: int = 64, context_length: int = 24, seed: int = 0) -> torch.Tensor:
    """Token rows shaped like a tokenizer's output: start, ids, end (the largest id), padding."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(n, context_length, dtype=torch.long)
    for row in range(n):
        length = int(torch.randint(3, context_length - 1, (1,), generator=g))
        tokens[row, 0] = vocab_size - 2
        tokens[row, 1:length] = torch.randint(1, vocab_size - 2, (length - 1,), generator=g)
        tokens[row, length] = vocab_size - 1
    return tokens


def write_pairs_csv(root: Path, *, n: int = 48, size: int = 20, bad: bool = False) -> Path:
    """``root/pairs.csv`` (columns filepath, title) over small PNG colour patches; with ``bad`` also a
    row whose image is missing, one with an empty caption and one with an undecodable image."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    names = list(COLOURS)
    rows = ["filepath,title"]
    (root / "img").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        name = names[i % len(names)]
        pixels = np.clip(np.array(COLOURS[name]) * 255 + rng.normal(0, 20, (size, size, 3)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(root / "img" / f"{i:03d}.png")
        rows.append(f"img/{i:03d}.png,a {('small', 'large')[i % 2]} {name} square")
    if bad:
        (root / "img" / "broken.png").write_bytes(b"not a png")
        rows += ["img/missing.png,a red square", "img/000.png,", "img/broken.png,a blue square"]
    path = root / "pairs.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def short_run(tmp_path: Path, **fields) -> TrainConfig:
    """A 4-step fp32 run of batch 8 on the CPU, checkpointing every 2 steps into ``tmp_path/runs``
    and logging every step; ``fields`` (the data, the model, ...) go over these."""
    base = dict(steps=4, batch_size=8, warmup_steps=1, save_every=2, keep_last=5, log_every=1,
                precision="fp32", workers=0, out=str(tmp_path / "runs"), progress=False)  # fmt: skip
    return TrainConfig.from_flat(**{**base, **fields})
