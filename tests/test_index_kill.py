"""SIGKILL in the middle of indexing loses nothing committed; the next run completes the index."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from search_fixtures import make_folder, tiny_encoder
from test_index import assert_same_index, run_index

TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"

SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path[:0] = [{tests!r}, {src!r}]
    from search_fixtures import tiny_encoder
    from clipforge.index import IndexStore, index_folder

    class Slow:  # makes the run last a few seconds so the test can kill it half-way
        def __init__(self, inner):
            self.inner = inner
        def __call__(self, image):
            time.sleep(0.03)
            return self.inner(image)

    encoder = tiny_encoder()
    encoder.transform = Slow(encoder.transform)
    index_folder({root!r}, IndexStore({db!r}, create=True), encoder, batch_size=4, num_workers=1,
                 commit_every=4, progress=False)
    print("finished", flush=True)
    """
)


def committed(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
            return c.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    except sqlite3.OperationalError:  # schema not created yet
        return 0


@pytest.mark.full_suite
def test_sigkill_mid_run_then_rerun_gives_the_full_index(tmp_path):
    root, db = tmp_path / "photos", tmp_path / "i.cfidx"
    make_folder(root, 100)
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=str(TESTS), src=str(SRC), root=str(root), db=str(db)))
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while committed(db) < 12:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "indexing never committed a batch"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the indexer and its DataLoader worker, at once
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = committed(db)
    assert 12 <= before < 100, before  # killed half-way

    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    report = run_index(root, db, tiny_encoder(), batch_size=16)
    assert report.added == 100 - before and report.total == 100 and report.unchanged == before

    fresh = tmp_path / "fresh.cfidx"
    run_index(root, fresh, tiny_encoder())
    assert_same_index(db, fresh)
