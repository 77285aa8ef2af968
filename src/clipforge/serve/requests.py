"""What an HTTP request may say, and how its values become the service's arguments.

The query-string parameters and JSON bodies of the routes in :mod:`clipforge.serve.app`, validated
by pydantic (a value out of range is a 422), and the translation of their values into library
arguments, where a bad value is a 400 naming the client's parameter (``lang``, ``prompt_lang``,
``after``), not the library's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import HTTPException, Path, Query
from pydantic import BaseModel, Field

from ..eval.prompts import PromptLanguageError
from ..index.records import PhotoFilter
from ..index.search import SearchPage
from ..tokenizer import TokenizerError
from .service import MAX_ID, MAX_LABEL_CHARS, MAX_LABELS, SearchService

K = Annotated[int, Query(ge=1, description="number of results")]
ImageId = Annotated[int, Path(ge=0, le=MAX_ID, description="an indexed image's id")]
Label = Annotated[str, Field(min_length=1, max_length=MAX_LABEL_CHARS)]
LANG_HELP = "the text's language code (NLLB-CLIP models: deu_Latn, zho_Hans...; /api/languages); default: the server's"
Lang = Annotated[str | None, Query(max_length=100, description=LANG_HELP)]
PROMPT_LANG_HELP = (
    "the language of the built-in prompt templates, an ISO 639-1 code (de, ja...; /api/prompt-languages); "
    "default: the server's. Not `lang`, the text tower's language token (NLLB-CLIP)"
)
PromptLang = Annotated[str | None, Query(max_length=20, description=PROMPT_LANG_HELP)]
TEMPLATES_HELP = "a built-in template set (default: the server's, /api/prompt-languages)"
Templates = Annotated[str | None, Query(max_length=40, description=TEMPLATES_HELP)]


class SearchRequest(BaseModel):
    text: str | None = Field(default=None, max_length=1000, description="text query")
    id: int | None = Field(default=None, ge=0, le=MAX_ID, description="an indexed image's id: 'more like this'")
    k: int = Field(default=20, ge=1)
    image_weight: float = Field(default=0.5, ge=0.0, le=1.0)
    offset: int = Field(default=0, ge=0, description="skip this many of the best results ('load more')")
    min_score: float | None = Field(default=None, ge=-1.0, le=1.0, description="minimum cosine similarity")
    min_relevance: float | None = Field(default=None, ge=0.0, le=1.0, description="minimum calibrated relevance")
    folder: str | None = Field(default=None, max_length=1000, description="this folder and those below it")
    after: str | None = Field(default=None, max_length=19, description="taken on or after (2021, 2021-07-04...)")
    before: str | None = Field(default=None, max_length=19, description="taken on or before (inclusive)")
    type: list[str] | None = Field(default=None, max_length=20, description="file types: jpeg, png, heic...")
    lang: str | None = Field(default=None, max_length=100, description=LANG_HELP)

    def page(self) -> SearchPage:
        return PageQuery(
            self.k, self.offset, self.min_score, self.folder, self.after, self.before, self.type, self.min_relevance
        ).page()


class ClassifyRequest(BaseModel):
    id: int = Field(ge=0, le=MAX_ID, description="an indexed image's id")
    labels: list[Label] = Field(min_length=1, max_length=MAX_LABELS)
    k: int = Field(default=5, ge=1)
    templates: str | None = Field(default=None, max_length=40, description=TEMPLATES_HELP)
    lang: str | None = Field(default=None, max_length=100, description=LANG_HELP)
    prompt_lang: str | None = Field(default=None, max_length=20, description=PROMPT_LANG_HELP)


class ModerateRequest(BaseModel):
    id: int = Field(ge=0, le=MAX_ID)


class EmbedTextRequest(BaseModel):
    texts: list[str] = Field(min_length=1, max_length=256)
    lang: str | None = Field(default=None, max_length=100, description=LANG_HELP)


Offset = Annotated[int, Query(ge=0, description="skip this many of the best results ('load more')")]
MinScore = Annotated[float | None, Query(ge=-1.0, le=1.0, description="minimum cosine similarity")]
MinRelevance = Annotated[float | None, Query(ge=0.0, le=1.0, description="minimum calibrated relevance, 0-1")]
Folder = Annotated[str | None, Query(max_length=1000, description="this folder and those below it")]
After = Annotated[str | None, Query(max_length=19, description="taken on or after: 2021, 2021-07, 2021-07-04")]
Before = Annotated[str | None, Query(max_length=19, description="taken on or before (inclusive)")]
Types = Annotated[list[str] | None, Query(description="file types (repeat, or comma-separated): jpeg, heic...")]


@dataclass(frozen=True)
class PageQuery:
    """The parameters every search route shares (query string or JSON): the page of the ranking
    and its filters, as the client sent them."""

    k: int
    offset: int
    min_score: float | None
    folder: str | None
    after: str | None
    before: str | None
    types: list[str] | None
    min_relevance: float | None = None

    def page(self) -> SearchPage:
        """The search page; a bad filter value is a 400 naming the client's parameter."""
        where = _where(self.folder, self.after, self.before, self.types)
        return SearchPage(
            k=self.k, offset=self.offset, where=where, min_score=self.min_score, min_relevance=self.min_relevance
        )


async def page_query(
    k: K = 20,
    offset: Offset = 0,
    min_score: MinScore = None,
    folder: Folder = None,
    after: After = None,
    before: Before = None,
    type: Types = None,
    min_relevance: MinRelevance = None,
) -> PageQuery:
    """The shared query parameters of the GET and upload search routes (a FastAPI dependency):
    range-checked here (422), turned into a filter by the route (400), as when each route had them."""
    return PageQuery(k, offset, min_score, folder, after, before, type, min_relevance)


def _where(folder: str | None, after: str | None, before: str | None, types: list[str] | None) -> PhotoFilter:
    """The filter of a request; bad values are a 400 naming the query parameter."""
    try:
        return PhotoFilter.make(folder=folder, taken_after=after, taken_before=before, types=split_labels(types or []))
    except ValueError as e:
        raise ValueError(str(e).replace("taken_after", "after").replace("taken_before", "before")) from None


def request_language(service: SearchService, lang: str | None) -> str | None:
    """The language code a request's texts are tokenized with; a bad one is a 400 naming ``lang``."""
    try:
        return service.resolve_language(lang)
    except TokenizerError as e:
        raise ValueError(str(e).replace("`language=", "`lang=")) from None


def request_prompt_language(service: SearchService, templates: str | None, prompt_lang: str | None) -> str | None:
    """The prompt language of a classify request, checked against its template set: a language the
    set is not in is a 400 naming ``prompt_lang``."""
    try:
        service.prompt_templates(templates, prompt_lang)
    except PromptLanguageError as e:
        e.parameter = "prompt_lang"
        if prompt_lang is None:  # the server's default language, not in the set the request named
            e.detail += " (the server's default prompt_lang: name one the set is in)"
        raise
    return prompt_lang


def split_labels(raw: list[str]) -> list[str]:
    """Repeated ``labels=`` parameters and/or comma-separated values → one list (at most
    ``MAX_LABELS`` of at most ``MAX_LABEL_CHARS`` characters, else 422)."""
    labels = [part for value in raw for part in value.split(",")]
    if len(labels) > MAX_LABELS:
        raise HTTPException(422, f"{len(labels)} labels: at most {MAX_LABELS} per request")
    if any(len(label) > MAX_LABEL_CHARS for label in labels):
        raise HTTPException(422, f"labels must have at most {MAX_LABEL_CHARS} characters")
    return labels
