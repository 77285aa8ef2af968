"""The built wheel is complete: OpenAI's vocabulary, the registry and the named configs travel in it,
and an install with an empty home directory tokenizes with OpenAI's vocabulary (nothing fetched)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]  # OpenAI's ids for "a photo of a cat"


@pytest.mark.slow
def test_wheel_ships_its_data_and_tokenizes_offline(tmp_path):
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools in this environment")
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path)]
    built = subprocess.run([*command, str(ROOT)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("clipforge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "clipforge/tokenizer/bpe_simple_vocab_16e6.txt.gz",
        "clipforge/tokenizer/LICENSE-openai-vocab.txt",
        "clipforge/pretrained/pretrained.json",
        "clipforge/model_configs/ViT-L-14-336.json",
        "clipforge/eval/templates/de/imagenet1k.txt",  # the prompt sets in other languages, and their sources
        "clipforge/eval/classnames/ja/imagenet1k.txt",
        "clipforge/eval/templates/NOTICE.md",
        "clipforge/eval/classnames/NOTICE.md",
    ):
        assert needed in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLIPFORGE_", "PYTHONPATH"))}
    env.update(HOME=str(home), PYTHONPATH=str(site), XDG_CACHE_HOME=str(home / ".cache"))
    code = (
        "import clipforge, json; from clipforge.tokenizer import get_tokenizer; "
        "ids = get_tokenizer('openai')(['a photo of a cat'])[0].tolist(); "
        "print(json.dumps([clipforge.__file__, [i for i in ids if i]]))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    path, ids = json.loads(run.stdout)
    assert path.startswith(str(site)) and ids == CAT_IDS
    assert not (home / ".cache" / "clipforge").exists()  # nothing was fetched or cached
