"""Progress: a tqdm bar on a terminal; elsewhere plain lines every N items with rate and ETA, no '\\r'."""

from __future__ import annotations

import io
import re

import pytest
from torch.utils.data import DataLoader, IterableDataset
from tqdm import tqdm

from clipforge import progress
from clipforge.progress import LogProgress, progress_bar
from clipforge.train.metrics_log import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def lines_of(stream: io.StringIO) -> list[str]:
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text  # no carriage-return redraws, no cursor moves
    return text.splitlines()


def test_without_a_terminal_a_line_every_n_items_with_rate_and_eta() -> None:
    out = io.StringIO()
    bar = progress_bar(total=100, desc="embedding", unit="img", every=10, stream=out)
    assert isinstance(bar, LogProgress)
    for _ in range(100):
        bar.update(1)
    bar.close()
    lines = lines_of(out)
    assert len(lines) == 10
    assert re.fullmatch(r"embedding: 10/100 img \(10%\) [\d.e+]+ img/s, ETA \d+:\d\d", lines[0]), lines[0]
    assert lines[-1].startswith("embedding: 100/100 img (100%)") and "elapsed" in lines[-1]


def test_without_every_about_ten_lines_and_a_last_one_at_close() -> None:
    out = io.StringIO()
    with progress_bar(total=95, unit="img", stream=out) as bar:  # every ceil(95 / 10) = 10
        for _ in range(95):
            bar.update(1)
    lines = lines_of(out)
    assert [line.split()[0] for line in lines] == [f"{n}/95" for n in (*range(10, 91, 10), 95)]


def test_iterating_and_resuming() -> None:
    out = io.StringIO()
    assert list(progress_bar(range(25), desc="x", every=10, stream=out)) == list(range(25))
    assert [line.split()[1] for line in lines_of(out)] == ["10/25", "20/25", "25/25"]
    out = io.StringIO()
    bar = progress_bar(total=100, initial=50, every=20, stream=out)  # a resumed run counts from 50
    for _ in range(50):
        bar.update()
    bar.close()
    assert [line.split()[0] for line in lines_of(out)] == ["60/100", "80/100", "100/100"]


class Stream(IterableDataset):
    def __iter__(self):
        return iter(range(3))


def test_unknown_total_writes_a_line_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "INTERVAL_S", 0.0)
    out = io.StringIO()
    bar = progress_bar(desc="images", unit="img", stream=out)
    bar.update(3)
    bar.update(4)
    bar.close()  # the count is the last line's: nothing more
    assert [line.split()[:3] for line in lines_of(out)] == [["images:", "3", "img"], ["images:", "7", "img"]]
    out = io.StringIO()
    loader = DataLoader(Stream(), batch_size=None)  # len() raises TypeError: no total
    assert list(progress_bar(loader, desc="batches", stream=out)) == [0, 1, 2]
    assert [line.split()[1] for line in lines_of(out)] == ["1", "2", "3"]


def test_bytes_postfix_and_messages() -> None:
    out = io.StringIO()
    bar = progress_bar(total=4 << 20, unit="B", unit_scale=True, every=2 << 20, desc="w.bin", stream=out)
    bar.set_postfix({"loss": "0.5000"}, refresh=False)
    bar.update(2 << 20)
    bar.write("step 3: accuracy 0.5")
    bar.update(2 << 20)
    bar.close()
    first, message, last = lines_of(out)
    assert first.startswith("w.bin: 2.00M/4.00MB (50%)") and first.endswith(", loss=0.5000"), first
    assert message == "step 3: accuracy 0.5" and last.startswith("w.bin: 4.00M/4.00MB (100%)")


@pytest.mark.parametrize(("rate", "said"), [(1234.56, "1235"), (12.34, "12.3"), (3.456, "3.46"), (0.2, "0.2")])
def test_rates_are_plain_numbers(rate: float, said: str) -> None:
    bar = LogProgress(total=None, desc="", unit="img", file=io.StringIO())
    assert bar._amount(rate) == said and bar._amount(12_000_000) == "12000000"


def test_a_terminal_gets_a_tqdm_bar_and_disabled_shows_nothing() -> None:
    assert isinstance(progress_bar(total=3, stream=Terminal()), tqdm)
    out = io.StringIO()
    bar = progress_bar(range(3), enabled=False, stream=out)
    assert list(bar) == [0, 1, 2] and out.getvalue() == ""
    with pytest.raises(ValueError, match="every=0"):
        progress_bar(total=3, every=0, stream=out)


def test_training_progress_logs_every_log_every_steps_with_that_steps_loss(capsys) -> None:
    p = Progress(total=20, initial=0, enabled=True, every=5)  # stderr is captured: not a terminal
    for step in range(1, 21):
        p.count(samples=8, data_wait=0.0)
        if step % 5 == 0:
            p.set_loss(1.0 / step)
        p.update()
    p.close()
    lines = lines_of(io.StringIO(capsys.readouterr().err))
    assert len(lines) == 4
    assert [re.search(r"loss=([\d.]+)", line).group(1) for line in lines] == ["0.2000", "0.1000", "0.0667", "0.0500"]
    assert all("samples/s=" in line and " step/s" in line for line in lines)
