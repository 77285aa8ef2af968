"""Querying an index: text, image, or both, top-k.

An :class:`ImageIndex` joins a store, its vector index and (for text/image queries) an
:class:`~clipforge.inference.Encoder` of the same model. A combined query is the normalised
weighted sum of the text and image embeddings. A :class:`~clipforge.index.records.PhotoFilter`
restricts the candidates (folder, date taken, file type) before ranking, ``min_score`` (cosine) and
``min_relevance`` (calibrated per query, see :mod:`clipforge.index.relevance`) drop weak matches and
``offset`` pages through the ranking ("load more"). Every hit carries its ``relevance`` in [0, 1]
beside the raw score. The vector index is reloaded when the database has
changed (checked at most every ``refresh_seconds``; added and removed rows are applied to the
index in memory), so a server keeps up with a running ``clipforge index`` without restarting.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.images import load_image
from ..inference import Encoder
from .ann import open_vector_index
from .binding import describe_model
from .protocol import Store
from .records import Fingerprint, PhotoFilter
from .relevance import DEFAULT_SAMPLE_SIZE, ScoreCalibration, sample_embeddings
from .stores import open_store

MAX_RESULTS = 10_000  # offset + k: deeper pages are not ranked
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchHit:
    id: int
    path: str  # relative to the index root
    score: float  # cosine similarity
    info: dict | None = None  # taken_at, taken_from, camera, width, height, type, folder (None: unknown)
    relevance: float | None = None  # the score calibrated against the query's scores, [0, 1]

    def to_dict(self) -> dict:
        relevance = None if self.relevance is None else round(self.relevance, 4)
        return {
            "id": self.id,
            "path": self.path,
            "score": round(self.score, 6),
            "relevance": relevance,
            **(self.info or {}),
        }


@dataclass(frozen=True)
class SearchPage:
    """Which hits of a ranking a search returns: ``k`` of them after the best ``offset``, among
    the rows that pass ``where``, score at least ``min_score`` (cosine) and have a relevance of at
    least ``min_relevance``."""

    k: int = 10
    offset: int = 0
    where: PhotoFilter | None = None
    min_score: float | None = None
    min_relevance: float | None = None

    def check(self) -> None:
        """Raise ``ValueError`` (naming the parameter) unless every field is in range."""
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        if self.offset < 0:
            raise ValueError(f"offset must be at least 0, got {self.offset}")
        if self.offset + self.k > MAX_RESULTS:
            raise ValueError(f"offset + k must be at most {MAX_RESULTS}, got {self.offset + self.k}")
        if self.min_score is not None and not -1.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score is a cosine similarity in [-1, 1], got {self.min_score}")
        if self.min_relevance is not None and not 0.0 <= self.min_relevance <= 1.0:
            raise ValueError(f"`min_relevance={self.min_relevance}` is out of range: relevance is in [0, 1]")


def blend(text: np.ndarray | None, image: np.ndarray | None, image_weight: float) -> np.ndarray:
    """(E,) unit float32 query: a text embedding, an image embedding, or their sum weighted
    ``1 - image_weight`` and ``image_weight`` (at least one must be given)."""
    parts = []
    if text is not None:
        parts.append((1.0 - image_weight if image is not None else 1.0, text))
    if image is not None:
        parts.append((image_weight if text is not None else 1.0, image))
    q = sum(w * v for w, v in parts)  # (E,)
    norm = float(np.linalg.norm(q))
    if norm == 0.0:
        raise ValueError("the text and image queries cancel out; change image_weight")
    return (q / norm).astype(np.float32)


class ImageIndex:
    """Search over an index database. Thread-safe for concurrent queries."""

    def __init__(
        self,
        store: Store,
        *,
        encoder: Encoder | None = None,
        threshold: int | None = None,
        nprobe: int | None = None,
        refresh_seconds: float = 2.0,
        calibration_sample: int = DEFAULT_SAMPLE_SIZE,
        progress: bool = False,
    ) -> None:
        if encoder is not None:
            store.check_model(encoder.model_id, model_name=encoder.model_name, model_path=encoder.reference)
            built, used = store.encoding(), (encoder.precision, encoder.backend)
            if None not in built and used != built:  # allowed (the user asked for it), but scores shift a little
                log.warning(
                    "%s: images were encoded at precision %s with backend %s; queries are encoded at %s with %s",
                    store.path, *built, *used,
                )
        self.store = store
        self.encoder = encoder
        self.threshold = threshold
        self.nprobe = nprobe
        self.refresh_seconds = refresh_seconds
        self.progress = progress
        self.calibration_sample = calibration_sample
        self._lock = threading.Lock()  # one reload at a time
        self._checked = 0.0
        self._vectors, self._fingerprint = open_vector_index(
            store, threshold=threshold, nprobe=nprobe, progress=progress
        )
        self._calibration = ScoreCalibration(sample_embeddings(store, size=calibration_sample))

    @classmethod
    def open(
        cls,
        db: str | Path | Store,
        *,
        encoder: Encoder | None = None,
        threshold: int | None = None,
        nprobe: int | None = None,
        progress: bool = False,
    ) -> ImageIndex:
        """``db``: an open store, or what :func:`~clipforge.index.stores.open_store` opens (a file, a URL)."""
        store = open_store(db) if isinstance(db, (str, Path)) else db
        return cls(store, encoder=encoder, threshold=threshold, nprobe=nprobe, progress=progress)

    @classmethod
    def load(
        cls,
        db: str | Path | Store,
        *,
        model: str | None = None,
        device: str = "auto",
        precision: str | None = None,
        backend: str | None = None,
        nprobe: int | None = None,
    ) -> ImageIndex:
        """Open ``db`` with an encoder of the model that built it (or ``model``, the same weights
        elsewhere). Queries are encoded at the ``precision`` and with the ``backend`` the images were
        (for an index that does not record them: "auto" and "torch"), unless these say otherwise.
        ``db``: an open store (closed if this fails), or a file or URL for
        :func:`~clipforge.index.stores.open_store`."""
        store = open_store(db) if isinstance(db, (str, Path)) else db
        try:
            model = model or store.get_meta("model_path")
            if not model:
                made_by = describe_model(store.get_meta("model_id"), store.get_meta("model_name"))
                raise ValueError(f"{db} does not record its model (made by {made_by}): pass `model=MODEL`")
            built_precision, built_backend = store.encoding()
            encoder = Encoder.load(
                model,
                device=device,
                precision=precision or built_precision or "auto",
                backend=backend or built_backend or "torch",
            )
            return cls(store, encoder=encoder, nprobe=nprobe)
        except BaseException:
            store.close()
            raise

    @property
    def root(self) -> Path:
        return self.store.root

    @property
    def kind(self) -> str:
        return self._vectors.kind

    @property
    def fingerprint(self) -> Fingerprint:
        return self._fingerprint

    def __len__(self) -> int:
        return len(self._vectors)

    def refresh(self, *, force: bool = False) -> bool:
        """Follow the database if it changed; True if it did. Cheap when nothing changed."""
        now = time.monotonic()
        if not force and now - self._checked < self.refresh_seconds:
            return False
        with self._lock:
            self._checked = now
            fp = self.store.fingerprint()
            if fp == self._fingerprint and not force:
                return False
            if self.encoder is not None:
                enc = self.encoder
                self.store.check_model(enc.model_id, model_name=enc.model_name, model_path=enc.reference)
            vectors, fp = open_vector_index(
                self.store,
                threshold=self.threshold,
                nprobe=self.nprobe,
                previous=(self._vectors, self._fingerprint),
                progress=self.progress,
            )
            calibration = ScoreCalibration(sample_embeddings(self.store, size=self.calibration_sample))
            # One reference swap each: a reader never sees half an index (a sample one refresh
            # older than the index only shifts the relevance estimates by a sampling error).
            self._vectors, self._fingerprint = vectors, fp
            self._calibration = calibration
            return True

    # -- queries ---------------------------------------------------------------------------------
    def query_vector(
        self, *, text: str | None = None, image=None, image_weight: float = 0.5, language: str | None = None
    ) -> np.ndarray:
        """(E,) unit query: the text embedding, the image embedding, or their weighted blend.
        ``language``: the text's language code (NLLB-CLIP models: ``"deu_Latn"``; None: the model's own)."""
        if self.encoder is None:
            raise ValueError(
                "this index was opened without a model: pass encoder= to search by text or image"
            )
        has_text = text is not None and bool(text.strip())
        if not has_text and image is None:
            raise ValueError("give a text query, an image, or both")
        if not 0.0 <= image_weight <= 1.0:
            raise ValueError(f"image_weight must be in [0, 1], got {image_weight}")
        self.encoder.text_tokenizer(language)  # checks the language, with or without a text
        text_vector = self.encoder.encode_texts([text], language=language)[0] if has_text else None
        image_vector = None
        if image is not None:
            if isinstance(image, (str, Path)):
                image = load_image(image)
            image_vector = self.encoder.encode_images([image])[0]
        return blend(text_vector, image_vector, image_weight)

    def search(
        self,
        *,
        text: str | None = None,
        image=None,
        k: int = 10,
        image_weight: float = 0.5,
        offset: int = 0,
        where: PhotoFilter | None = None,
        min_score: float | None = None,
        min_relevance: float | None = None,
        language: str | None = None,
    ) -> list[SearchHit]:
        """Top-``k`` hits for a text, an image (PIL image or path), or both (see :meth:`search_vector`);
        ``language``: the text's language code (NLLB-CLIP models only, e.g. ``"deu_Latn"``)."""
        query = self.query_vector(text=text, image=image, image_weight=image_weight, language=language)
        return self.search_vector(
            query, k=k, offset=offset, where=where, min_score=min_score, min_relevance=min_relevance
        )

    def search_vector(
        self,
        query: np.ndarray,
        *,
        k: int = 10,
        offset: int = 0,
        where: PhotoFilter | None = None,
        min_score: float | None = None,
        min_relevance: float | None = None,
    ) -> list[SearchHit]:
        """Hits ``offset`` to ``offset + k`` of the ranking for one (E,) unit vector, among the rows
        that pass ``where``, score at least ``min_score`` (cosine) and have at least ``min_relevance``."""
        page = SearchPage(k=k, offset=offset, where=where, min_score=min_score, min_relevance=min_relevance)
        return self.search_page(query, page)

    def _ranked(self, q: np.ndarray, n: int, where: PhotoFilter | None) -> tuple[np.ndarray | None, np.ndarray]:
        """(scores (1, n), ids (1, n)) of the best rows passing ``where`` for the (1, E) query; None
        scores when no row passes. A store that filters itself (Qdrant: ``search_where``) gets the
        filter; otherwise the store lists the passing ids and the vector index keeps only those."""
        vectors = self._vectors
        if where is None or where.is_empty():
            return vectors.search(q, n)
        search_where = getattr(vectors, "search_where", None)
        if search_where is not None:
            return search_where(q, n, where=where)
        allowed = self.store.ids_matching(where)
        if len(allowed) == 0:
            return None, np.empty((1, 0), dtype=np.int64)
        return vectors.search(q, n, allowed=allowed)

    def search_page(self, query: np.ndarray, page: SearchPage) -> list[SearchHit]:
        """:meth:`search_vector` with its window and filters as one record."""
        page.check()
        k, offset, where, min_score = page.k, page.offset, page.where, page.min_score
        calibration = self._calibration
        q = np.asarray(query, dtype=np.float32)[None]  # (1, E)
        scores, ids = self._ranked(q, offset + k, where)  # (1, offset + k) each
        if scores is None:
            return []
        # Cosines of float32 unit vectors; a float16 index or rounding can step past ±1 by ~1e-4.
        scores = np.clip(scores, -1.0, 1.0)
        found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
        if min_score is not None:
            found = [(i, s) for i, s in found if s >= min_score]
        relevance = calibration.relevance(q[0], np.array([s for _, s in found], dtype=np.float32))  # (F,)
        relevances = [None] * len(found) if relevance is None else relevance.tolist()
        scored = [(i, s, r) for (i, s), r in zip(found, relevances, strict=True)]
        if page.min_relevance is not None:  # an empty collection has no relevance and no hits
            scored = [(i, s, r) for i, s, r in scored if r is not None and r >= page.min_relevance]
        scored = scored[offset:]
        details = self.store.details_of(i for i, _, _ in scored)
        # A row deleted since the vectors were loaded has no details: drop it rather than fail.
        hits = []
        for i, s, r in scored:
            if i in details:
                info = dict(details[i])
                hits.append(SearchHit(i, info.pop("path"), s, info, relevance=r))
        return hits
