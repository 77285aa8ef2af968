"""Opportunistic batching of text queries: one worker thread owns the text model calls.

Request threads enqueue their text and wait on a future. The worker takes everything queued at the
moment it becomes free (up to ``max_batch``) and encodes it as one batch. No request ever waits for
a batch to fill: alone, a query is encoded at once; under load, queries that arrived while the
model was busy share the next call, which on CPU costs little more than a single query. Queries in
different languages (NLLB-CLIP's language codes) are encoded in one call per language.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

import numpy as np

from ..inference import Encoder


class TextBatcher:
    def __init__(self, encoder: Encoder, *, max_batch: int = 32, timeout: float = 120.0) -> None:
        self.encoder = encoder
        self.max_batch = max_batch
        self.timeout = timeout
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.batches = 0  # statistics: calls made, texts encoded
        self.texts = 0

    def encode(self, text: str, *, language: str | None = None) -> np.ndarray:
        """(E,) embedding of one text, computed in a shared batch; ``language``: its language code
        (NLLB-CLIP models, see :meth:`~clipforge.inference.Encoder.encode_texts`)."""
        self._ensure_started()
        future: Future = Future()
        self._queue.put((text, language, future))
        return future.result(timeout=self.timeout)

    def _ensure_started(self) -> None:
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="clipforge-text-batcher", daemon=True
                    )
                    self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.append(nxt)
            by_language: dict[str | None, list[tuple[str, Future]]] = {}
            for text, language, future in batch:
                if future.set_running_or_notify_cancel():
                    by_language.setdefault(language, []).append((text, future))
            for language, live in by_language.items():
                self._encode(live, language)

    def _encode(self, live: list[tuple[str, Future]], language: str | None) -> None:
        """One model call for texts of one language; the callers get the vectors, or the error."""
        texts = [t for t, _ in live]
        try:
            if language is None:  # (an encoder of a model without languages need not take the keyword)
                vectors = self.encoder.encode_texts(texts)  # (B, E)
            else:
                vectors = self.encoder.encode_texts(texts, language=language)  # (B, E)
        except BaseException as e:  # the callers get the error; the worker lives on
            for _, f in live:
                f.set_exception(e)
            return
        self.batches += 1
        self.texts += len(live)
        for (_, f), v in zip(live, vectors, strict=True):
            f.set_result(v)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None
