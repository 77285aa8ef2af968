"""Suite-wide fixtures. The tiny-model factory lives in ``factories.py``, loaded here as a plugin."""

import os

import pytest
import torch

from clipforge.device import CPU_BF16_ENV

pytest_plugins = ["factories"]


def pytest_configure(config) -> None:
    """Under pytest-xdist (``make test`` runs ``-n auto``), share the cores between the workers: each
    worker, and the processes its tests start (``$OMP_NUM_THREADS``), gets cores / workers threads.
    Oversubscribing a small machine makes torch several times slower, not faster."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


HEAVY_MARKS = ("slow", "browser", "distributed")


def pytest_collection_modifyitems(config, items) -> None:
    """Longest work first, so that xdist's workers finish together: test files ordered by the largest
    ``timeout`` mark among their tests (the tests that train a model declare one), then by their
    number of heavy tests (marked ``slow``, ``browser`` or ``distributed``: a file of two slow tests
    must not be the last one a worker picks up), then by their number of tests (xdist's own order,
    which the Makefile turns off with ``--no-loadscope-reorder`` so that this one holds); a file's
    tests keep their order."""

    def declared_timeout(item) -> float:
        mark = item.get_closest_marker("timeout")
        if mark is None:
            return 0.0
        return float(mark.args[0] if mark.args else mark.kwargs.get("timeout", 0.0))

    longest: dict[str, float] = {}
    heavy: dict[str, int] = {}
    count: dict[str, int] = {}
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        longest[path] = max(longest.get(path, 0.0), declared_timeout(item))
        heavy[path] = heavy.get(path, 0) + any(item.get_closest_marker(m) for m in HEAVY_MARKS)
        count[path] = count.get(path, 0) + 1

    def key(item) -> tuple[float, int, int]:
        path = item.nodeid.split("::", 1)[0]
        return -longest[path], -heavy[path], -count[path]

    items.sort(key=key)  # stable: a file's tests stay together and in order


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from torch's global RNG seeded with 0."""
    torch.manual_seed(0)


@pytest.fixture(params=[False, True], ids=["probe-avx2", "probe-avx512bf16"])
def cpu_probe(request, monkeypatch) -> bool:
    """Run a precision-sensitive test under both outcomes of the CPU probe, whatever this machine
    is: ``$CLIPFORGE_CPU_BF16`` forced to 0 (``precision="auto"`` is fp32, as on AVX2-only CPUs)
    and to 1 (auto is bf16, as on AVX512-BF16 CPUs). Child processes inherit it. The value is
    whether auto means bf16 on the CPU. (``CLIPFORGE_CPU_BF16=0 make test`` forces a whole run.)"""
    monkeypatch.setenv(CPU_BF16_ENV, "1" if request.param else "0")
    return request.param


@pytest.fixture
def isolated_caches(tmp_path, monkeypatch) -> None:
    """Empty clipforge and Hugging Face Hub caches under ``tmp_path``, and no network (Hub offline)."""
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cf-cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def shapes_model():
    """A tiny 64 px ViT trained on the built-in shapes data (``evalkit.train_shapes_model``: ~37 s on
    one core of a 2-core machine when it trains, so its users are marked slow; cached on disk across
    sessions until the code changes): (checkpoint path, the training loop's final evaluation dict)."""
    from evalkit import train_shapes_model

    return train_shapes_model()


@pytest.fixture(params=["sqlite", "qdrant"])
def make_store(request, tmp_path):
    """Opens stores of each kind the search tests run over (see ``search_fixtures.StoreMaker``)."""
    # Imported here, not at the top: search_fixtures imports the `factories` plugin, which pytest
    # must import first (to rewrite its asserts).
    from search_fixtures import StoreMaker

    if request.param == "qdrant":
        pytest.importorskip("qdrant_client", reason="the Qdrant store needs the `qdrant` extra")
    maker = StoreMaker(request.param, tmp_path)
    yield maker
    maker.close_all()
