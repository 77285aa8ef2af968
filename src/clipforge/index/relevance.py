"""A score people can threshold: each hit's cosine placed against its own query's scores.

A raw cosine means different things for different queries and models: one query's best matches
score 0.31, another's unrelated images already score 0.28. What does carry across queries is how
far a hit stands out from the bulk of the collection *for that query*. :class:`ScoreCalibration`
keeps a uniform sample of the stored embeddings (``sample_size`` rows, drawn again when the
collection changes) and, per query, scores the sample (one (S, E) x (E,) product): the mean of
those scores is the query's typical score over the collection, their standard deviation its
spread. A hit's standard score is

    z = (score - mean) / std

and its relevance the logistic ``1 / (1 + exp(-(z - midpoint) / width))``: 0.5 at ``midpoint``
standard deviations above the query's mean score, 0.12 one standard deviation below that and 0.88
one above (``width`` 0.5). The midpoint, 1.5, is where the best single cutoff fell in
``benchmarks/bench_relevance.py`` for every model and query type tried there (text and image
queries, z between 1.46 and 1.72, while the best cosine cutoff ranged from 0.52 to 0.90); it
could not be checked against pretrained CLIP weights, which cannot be downloaded here.

Relevance is monotone in the score within one query, so it never reorders a ranking; it only
moves every query's scores onto one scale, so that one relevance cutoff acts as a cosine cutoff
chosen per query.

A query that most of the collection matches ("a photo") has no stand-out hits, and relevance
says so (low everywhere). With fewer images than the sample size the whole collection is the
sample; below a few hundred images the estimates are rough.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .protocol import Store

DEFAULT_SAMPLE_SIZE = 2048
MIDPOINT_Z = 1.5  # standard score at which relevance is 0.5 (see the module docstring)
WIDTH_Z = 0.5  # standard scores per unit of log-odds
MIN_SPREAD = 1e-4  # cosine: a collection of near-copies still gives a finite standard score
SAMPLE_LOOKUP = 8192  # ids looked up at once while sampling (their vectors are held twice, briefly)


@dataclass(frozen=True)
class QueryBackground:
    """One query's scores over the collection, summarised: their mean and standard deviation."""

    centre: float
    spread: float

    def z(self, scores: np.ndarray) -> np.ndarray:
        """(n,) cosines → (n,) standard scores against this background."""
        return (np.asarray(scores, dtype=np.float64) - self.centre) / self.spread


def relevance_of_z(z: np.ndarray) -> np.ndarray:
    """(n,) standard scores → (n,) relevance in [0, 1] (the logistic of the module docstring)."""
    t = np.clip((np.asarray(z, dtype=np.float64) - MIDPOINT_Z) / WIDTH_Z, -60.0, 60.0)
    return 1.0 / (1.0 + np.exp(-t))


class ScoreCalibration:
    """Per-query backgrounds from a (S, E) float32 sample of the stored embeddings."""

    def __init__(self, sample: np.ndarray) -> None:
        sample = np.ascontiguousarray(sample, dtype=np.float32)
        if sample.ndim != 2:
            raise ValueError(f"sample must be a (S, E) matrix, got shape {sample.shape}")
        self.sample = sample  # (S, E)

    def __len__(self) -> int:
        return len(self.sample)

    def background(self, query: np.ndarray) -> QueryBackground | None:
        """The query's mean score and its standard deviation over the sample; None for an empty sample."""
        if len(self.sample) == 0:
            return None
        q = np.asarray(query, dtype=np.float32).reshape(-1)  # (E,)
        scores = self.sample @ q  # (S,)
        return QueryBackground(float(scores.mean()), max(float(scores.std()), MIN_SPREAD))

    def relevance(self, query: np.ndarray, scores: np.ndarray) -> np.ndarray | None:
        """(n,) cosines of hits for ``query`` → (n,) relevance in [0, 1]; None for an empty sample."""
        bg = self.background(query)
        return None if bg is None else relevance_of_z(bg.z(scores))


def sample_embeddings(store: Store, *, size: int = DEFAULT_SAMPLE_SIZE, seed: int = 0) -> np.ndarray:
    """(S, E) float32: ``size`` stored embeddings drawn uniformly without replacement (all of them
    when there are fewer), at the cost of ``size`` lookups by id, whatever the collection size.
    Deterministic for a given ``seed`` and store state."""
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    fp = store.fingerprint()
    if fp.count <= size:
        return store.load_embeddings()[1]
    rng = np.random.default_rng([seed, fp.max_id])
    sample = np.empty((size, store.embed_dim or 0), dtype=np.float32)  # (S, E): the only full-size buffer
    n = 0
    tried: set[int] = set()
    density = fp.count / fp.max_id  # ids are 1..max_id with holes where rows were deleted
    for _ in range(16):  # each round expects to find every missing row; a few rounds at most
        need = size - n
        if need <= 0 or len(tried) >= fp.max_id:
            break
        draw = rng.integers(1, fp.max_id + 1, size=min(fp.max_id, int(need / density * 1.25) + 16))
        fresh = [i for i in dict.fromkeys(draw.tolist()) if i not in tried]
        tried.update(fresh)
        for start in range(0, len(fresh), SAMPLE_LOOKUP):  # rows looked up a bounded chunk at a time
            chunk = fresh[start : start + SAMPLE_LOOKUP]
            found = store.embeddings_of(chunk)
            for i in chunk:
                if i in found and n < size:
                    sample[n] = found[i]
                    n += 1
    return sample[:n]
