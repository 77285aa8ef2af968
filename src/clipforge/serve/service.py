"""What the server does, without HTTP: search, classify, moderate, embed, thumbnails.

One :class:`SearchService` is shared by all request threads. Model calls go through the
:class:`~clipforge.inference.Encoder`, whose lock runs them one at a time (text queries are
batched by one worker thread, :mod:`.batching`); decoding uploads,
thumbnails and vector search run concurrently. SQLite connections are per thread (see
:class:`~clipforge.index.store.IndexStore`). Zero-shot classification and moderation reuse the
image embedding (stored, for indexed images) and score it with ``clipforge.eval``'s
``ZeroShotClassifier`` / ``Moderator``, built once per label set (cached) or per policy.

Queries and labels of NLLB-CLIP models are tokenized with a language code: the request's, else the
service's ``language``, else the model's own (moderation policies always with the model's own). Apart
from that code, classification's prompt templates are a built-in set (the request's, else the
service's ``templates``) in a prompt language, an ISO 639-1 code (the request's ``prompt_language``,
else the service's, else English; see :mod:`clipforge.eval.prompts`).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..eval.classifier import ZeroShotClassifier
from ..eval.moderate import Moderator
from ..eval.policy import Policy, load_policy
from ..eval.prompts import (
    ENGLISH,
    PromptLanguageError,
    builtin_templates,
    check_labels,
    load_templates,
    template_sets_by_language,
)
from ..index.protocol import Store
from ..index.search import ImageIndex, SearchPage, blend
from ..index.thumbs import THUMB_SIZE, ThumbnailError, indexed_file, make_thumbnail
from ..tokenizer import TokenizerError
from .batching import TextBatcher
from .uploads import DEFAULT_MAX_PIXELS, decode_upload

log = logging.getLogger(__name__)


MAX_ID = 2**63 - 1  # index ids are SQLite's signed 64-bit integers
MAX_LABELS = 100  # per classify request: each label costs a text-encoder pass per template
MAX_LABEL_CHARS = 200


class NotFound(LookupError):
    """No such indexed image (or it is no longer readable)."""


class NotConfigured(RuntimeError):
    """A feature the server was started without (e.g. moderation without a policy)."""


@dataclass(frozen=True)
class SearchQuery:
    """One search request, by whichever route it came: a text, an image (uploaded bytes or an
    indexed image's id), or both blended by ``image_weight``; and which page of the ranking."""

    text: str | None = None
    image_bytes: bytes | None = None
    image_id: int | None = None
    image_weight: float = 0.5
    page: SearchPage = field(default_factory=lambda: SearchPage(k=20))
    language: str | None = None  # the text's language code (NLLB-CLIP); None: the service's default

    @property
    def has_text(self) -> bool:
        return self.text is not None and bool(self.text.strip())

    @property
    def has_image(self) -> bool:
        return self.image_bytes is not None or self.image_id is not None


@functools.lru_cache(maxsize=64)
def _builtin_prompts(templates: str, language: str | None) -> tuple[str, ...]:
    """A built-in template set in ``language``, read once (a request names one per classification)."""
    return tuple(load_templates(templates, language=language))


class _LRU:
    """A small thread-safe least-recently-used cache."""

    def __init__(self, size: int) -> None:
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key, make: Callable):
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        value = make()  # outside the lock: a slow miss does not block hits
        with self.lock:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value


class SearchService:
    def __init__(
        self,
        index: ImageIndex,
        *,
        policy: Policy | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_k: int = 200,
        thumb_size: int = THUMB_SIZE,
        thumb_cache: int = 2048,
        text_cache: int = 4096,
        classifier_cache: int = 16,
        language: str | None = None,
        templates: str = "default",
        prompt_language: str | None = None,
    ) -> None:
        """``language``: the language code of queries and labels that name none (NLLB-CLIP models:
        ``"deu_Latn"``; None: the model's own), checked here. ``templates``: the built-in template set
        of classify requests that name none; ``prompt_language``: the language (ISO 639-1, ``"de"``;
        None: English) of the template set of requests that name none, checked here against
        ``templates`` (a :class:`~clipforge.eval.prompts.PromptLanguageError` naming
        ``prompt_language``)."""
        if index.encoder is None:
            raise ValueError("the service needs an index opened with an encoder (the model)")
        self.index = index
        self.encoder = index.encoder
        self.language = language
        self.encoder.text_tokenizer(language)  # a bad code fails now, not at the first query
        self.templates = templates
        self.prompt_language = prompt_language
        self.prompt_templates(None, None)  # a set or prompt language it is not in fails now too
        self.max_pixels = max_pixels
        self.max_k = max_k
        self.thumb_size = thumb_size
        self._thumbs = _LRU(thumb_cache)
        self._texts = _LRU(text_cache)
        self._classifiers = _LRU(classifier_cache)
        self._batcher = TextBatcher(self.encoder)
        self._refresh_lock = threading.Lock()
        self._refresher: threading.Thread | None = None
        self._refreshed = time.monotonic()
        self.policy = policy
        self._moderator: Moderator | None = None
        self._moderator_lock = threading.Lock()

    @classmethod
    def from_paths(
        cls,
        checkpoint: str | Path,
        db: str | Path | Store,
        *,
        device: str = "auto",
        precision: str | None = None,
        backend: str | None = None,
        policy: str | Path | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        nprobe: int | None = None,
        language: str | None = None,
        templates: str = "default",
        prompt_language: str | None = None,
    ) -> SearchService:
        """``db``: an open store, or an index file or store URL (see :func:`~clipforge.index.stores.open_store`).
        ``precision`` / ``backend``: by default the ones the index's images were encoded with.
        ``language``: the default language code of queries (NLLB-CLIP models); ``templates`` /
        ``prompt_language``: the default template set of classify requests and its language."""
        loaded_policy = None if policy is None else load_policy(policy)
        index = ImageIndex.load(
            db, model=str(checkpoint), device=device, precision=precision, backend=backend, nprobe=nprobe
        )
        try:
            return cls(
                index, policy=loaded_policy, max_pixels=max_pixels, language=language, templates=templates,
                prompt_language=prompt_language,
            )  # fmt: skip
        except BaseException:
            index.store.close()
            raise

    # -- helpers ---------------------------------------------------------------------------------
    def _check_k(self, k: int) -> int:
        if not 1 <= k <= self.max_k:
            raise ValueError(f"k must be between 1 and {self.max_k}, got {k}")
        return k

    def resolve_language(self, language: str | None) -> str | None:
        """The language code a request's texts are tokenized with (checked: a bad one is a
        ``TokenizerError``, a ``ValueError``, naming ``language``)."""
        language = self.language if language is None else language
        self.encoder.text_tokenizer(language)
        return language

    def prompt_templates(self, templates: str | None, prompt_language: str | None) -> list[str]:
        """The templates of built-in set ``templates`` in ``prompt_language`` (None: the service's
        defaults). A client names a built-in set, never a path; a language the set is not in is a
        :class:`~clipforge.eval.prompts.PromptLanguageError` naming ``prompt_language``."""
        templates = self.templates if templates is None else templates
        if templates not in builtin_templates():
            raise ValueError(f"unknown template set {templates!r}; choose one of {builtin_templates()}")
        try:
            language = self.prompt_language if prompt_language is None else prompt_language
            return list(_builtin_prompts(templates, language))
        except PromptLanguageError as e:
            e.parameter = "prompt_language"  # not ``language``: that is NLLB's tokenizer code
            raise

    def text_vector(self, text: str, language: str | None = None) -> np.ndarray:
        """(E,) embedding of a text in ``language`` (None: the service's default)."""
        language = self.resolve_language(language)
        return self._texts.get((language, text), lambda: self._batcher.encode(text, language=language))  # (E,)

    def image_vector(self, *, image_bytes: bytes | None = None, image_id: int | None = None) -> np.ndarray:
        """(E,) embedding of an uploaded image, or the stored one of an indexed image."""
        if image_id is not None:
            vector = self.index.store.embedding_of(image_id)
            if vector is None:
                raise NotFound(f"no indexed image with id {image_id}")
            return vector
        if image_bytes is None:
            raise ValueError("no image given")
        return self.encoder.encode_images([decode_upload(image_bytes, max_pixels=self.max_pixels)])[0]

    # -- operations --------------------------------------------------------------------------------
    def _refresh_in_background(self) -> None:
        """Follow database changes (a running `clipforge index`) without making a request wait:
        the update runs in its own thread; searches use the current vectors meanwhile."""
        with self._refresh_lock:
            if self._refresher is not None and self._refresher.is_alive():
                return
            if time.monotonic() - self._refreshed < self.index.refresh_seconds:
                return
            self._refreshed = time.monotonic()
            self._refresher = threading.Thread(target=self._refresh, name="clipforge-index-refresh", daemon=True)
            self._refresher.start()

    def _refresh(self) -> None:
        try:
            self.index.refresh()
        except Exception:  # e.g. the database was rebuilt with another model: keep serving, say why
            log.exception("could not follow changes of %s", self.index.store.path)

    def close(self) -> None:
        self._batcher.close()

    def health(self) -> dict:
        fp = self.index.fingerprint
        return {
            "status": "ok",
            "images": fp.count,
            "model_id": fp.model_id,
            "model": self.encoder.model_name,
            "search": self.index.kind,
            "moderation": self.policy is not None,
        }

    def search(self, query: SearchQuery) -> list[dict]:
        """Hits as dicts (id, path, score, photo fields). Text, an image (uploaded or by id), or both
        blended; the query's page (``offset``/``k``) pages through the ranking, its ``where`` and
        ``min_score`` filter it."""
        self._check_k(query.page.k)
        if not 0.0 <= query.image_weight <= 1.0:
            raise ValueError(f"image_weight must be in [0, 1], got {query.image_weight}")
        if not query.has_text and not query.has_image:
            raise ValueError("give a text query, an image, or both")
        language = self.resolve_language(query.language)
        text = self.text_vector(query.text.strip(), language) if query.has_text else None
        image = self.image_vector(image_bytes=query.image_bytes, image_id=query.image_id) if query.has_image else None
        vector = blend(text, image, query.image_weight)
        self._refresh_in_background()
        return [h.to_dict() for h in self.index.search_page(vector, query.page)]

    def filters(self) -> dict:
        """What the search filters can choose from: folders, file types and the range of dates."""
        return self.index.store.facets()

    def _classifier(
        self, labels: tuple[str, ...], templates: str | None, language: str | None, prompt_language: str | None
    ) -> ZeroShotClassifier:
        prompts = tuple(self.prompt_templates(templates, prompt_language))
        language = self.resolve_language(language)

        def build():
            with self.encoder.lock:  # builds class embeddings with the text tower
                return ZeroShotClassifier(
                    self.encoder.model,
                    self.encoder.text_tokenizer(language),
                    list(labels),
                    list(prompts),
                    transform=self.encoder.transform,
                )

        return self._classifiers.get((labels, prompts, language), build)

    def classify(
        self,
        labels: list[str],
        *,
        image_bytes: bytes | None = None,
        image_id: int | None = None,
        k: int = 5,
        templates: str | None = None,
        language: str | None = None,
        prompt_language: str | None = None,
    ) -> list[dict]:
        """The ``k`` most likely labels (softmax over ``labels``), best first; ``language``: the labels'
        language code (NLLB-CLIP; None: the service's default); ``templates`` / ``prompt_language``:
        the built-in template set and its ISO 639-1 language (None: the service's defaults)."""
        if len(labels) > MAX_LABELS:
            raise ValueError(f"{len(labels)} labels: at most {MAX_LABELS} per request")
        if any(len(label) > MAX_LABEL_CHARS for label in labels):
            raise ValueError(f"labels must have at most {MAX_LABEL_CHARS} characters")
        labels = check_labels(list(labels))
        clf = self._classifier(tuple(labels), templates, language, prompt_language)
        features = torch.from_numpy(self.image_vector(image_bytes=image_bytes, image_id=image_id))[None]  # (1, E)
        ranked = clf.rank(clf.scores_from_features(features), k=max(1, min(k, len(labels))))[0]
        return [{"label": label, "score": round(score, 6)} for label, score in ranked]

    def moderate(self, *, image_bytes: bytes | None = None, image_id: int | None = None) -> dict:
        if self.policy is None:
            raise NotConfigured(
                "moderation is off: this server was started without a policy "
                "(`clipforge serve MODEL --policy POLICY.yaml`, or `policy=` in Python)"
            )
        with self._moderator_lock:
            if self._moderator is None:
                with self.encoder.lock:
                    self._moderator = Moderator(
                        self.encoder.model,
                        self.encoder.tokenizer,
                        self.policy,
                        transform=self.encoder.transform,
                    )
        features = torch.from_numpy(self.image_vector(image_bytes=image_bytes, image_id=image_id))[None]
        decision = self._moderator.decide(self._moderator.scores_from_features(features))[0]
        return decision.to_dict()

    def embed_texts(self, texts: list[str], language: str | None = None) -> np.ndarray:
        return self.encoder.encode_texts(texts, language=self.resolve_language(language))  # (B, E)

    def languages(self) -> dict:
        """The language codes requests may name (NLLB-CLIP models; none for others) and the default."""
        try:
            codes = self.encoder.languages
        except TokenizerError:  # a model without a usable tokenizer: no text at all, no languages
            codes = ()
        default = self.language or (self.encoder.language if codes else None)
        return {"language": default, "languages": list(codes)}

    def prompt_languages(self) -> dict:
        """The prompt languages of classify requests (``prompt_language``): the default one and the
        default template set, and for each ISO 639-1 code the built-in template sets in it."""
        return {
            "prompt_language": self.prompt_language or ENGLISH,
            "templates": self.templates,
            "prompt_languages": template_sets_by_language(),
        }

    def embed_image(self, image_bytes: bytes) -> np.ndarray:
        return self.image_vector(image_bytes=image_bytes)  # (E,)

    def image_path(self, image_id: int) -> Path:
        """The file of an indexed image: looked up by id in the database, never taken from a client."""
        rel = self.index.store.path_of(image_id)
        if rel is None:
            raise NotFound(f"no indexed image with id {image_id}")
        try:
            return indexed_file(self.index.root, rel)
        except ThumbnailError as e:
            raise NotFound(f"image {image_id} is not available ({e})") from e

    def thumbnail(self, image_id: int) -> bytes:
        path = self.image_path(image_id)

        def build():
            try:
                return make_thumbnail(path, size=self.thumb_size, max_pixels=self.max_pixels * 4)
            except ThumbnailError as e:
                raise NotFound(f"image {image_id} cannot be shown ({e})") from e

        return self._thumbs.get(image_id, build)
