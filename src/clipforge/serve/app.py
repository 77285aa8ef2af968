"""The HTTP layer: FastAPI routes over a :class:`~clipforge.serve.service.SearchService`.

Images are uploaded as the raw request body (``curl --data-binary @q.jpg``), read with a byte
limit and checked for decompression bombs before decoding. JSON bodies are validated by pydantic
(malformed → 422). Thumbnails and files are addressed by index id only. Every error is a JSON
``{"detail": ...}`` with a 4xx status; nothing a client sends can stop the server. Texts (queries,
labels) may name their language, ``lang`` (NLLB-CLIP's codes, ``/api/languages``); classification's
built-in prompt templates theirs, ``prompt_lang`` (ISO 639-1 codes, ``/api/prompt-languages``): the
first is the text tower's language token, the second which translation of the templates is encoded.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from functools import partial
from importlib import resources
from typing import Annotated

import numpy as np

try:
    from fastapi import Depends, FastAPI, HTTPException, Query, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import FileResponse, JSONResponse, Response
except ImportError as e:  # the package imports this module; say how to get the extra
    raise ImportError(f"clipforge's HTTP server needs FastAPI ({e}): pip install 'clipforge[serve]'") from e

from ..index.qdrant import QdrantStoreError
from .limits import DEFAULT_BODY_TIMEOUT_S, DEFAULT_MAX_ACTIVE, DEFAULT_MAX_JSON_BYTES, RequestLimits
from .requests import (
    ClassifyRequest,
    EmbedTextRequest,
    ImageId,
    K,
    Lang,
    ModerateRequest,
    PageQuery,
    PromptLang,
    SearchRequest,
    Templates,
    page_query,
    request_language,
    request_prompt_language,
    split_labels,
)
from .security import LOOPBACK_HOSTS, HostAllowList, TokenGate, check_token
from .service import NotConfigured, NotFound, SearchQuery, SearchService
from .uploads import DEFAULT_MAX_UPLOAD_BYTES, UploadError, read_limited

log = logging.getLogger(__name__)

STATIC_FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {"image/*": {"schema": {"type": "string", "format": "binary"}}},
    }
}
ReadBody = Callable[[Request], Awaitable[bytes]]  # an upload route's body, read within the byte limit


def create_app(
    service: SearchService,
    *,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_json_bytes: int = DEFAULT_MAX_JSON_BYTES,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    max_active: int = DEFAULT_MAX_ACTIVE,
    allowed_hosts: Iterable[str] = LOOPBACK_HOSTS,
    token: str | None = None,
    title: str = "clipforge search",
) -> FastAPI:
    """The application: JSON API under ``/api``, the web page at ``/``, OpenAPI docs at ``/docs``.

    Only requests whose ``Host:`` is in ``allowed_hosts`` are served (``"*"``: any); with a
    ``token`` every route requires it (see :mod:`.security`). Bodies, body time and running
    requests are limited as :mod:`.limits` describes."""
    app = _new_app(service, title=title, token_required=bool(token))
    # guards; the last added runs first: Host check, then token, then per-request limits
    app.add_middleware(
        RequestLimits,
        max_upload_bytes=max_upload_bytes,
        max_json_bytes=max_json_bytes,
        body_timeout_s=body_timeout_s,
        max_active=max_active,
    )
    if token:
        app.add_middleware(TokenGate, token=check_token(token))
    app.add_middleware(HostAllowList, allowed_hosts=allowed_hosts)
    _add_error_handlers(app)
    read_body: ReadBody = partial(read_limited, max_bytes=max_upload_bytes)
    _add_search_routes(app, service, read_body)
    _add_classify_routes(app, service, read_body)
    _add_embed_routes(app, service, read_body)
    _add_image_routes(app, service)
    _add_page_routes(app)
    return app


def _image_post(app: FastAPI, path: str, *, tag: str, summary: str) -> Callable[[Callable], Callable]:
    """``app.post`` for a route whose request body is image bytes (so documented in OpenAPI)."""
    return app.post(path, tags=[tag], summary=summary, openapi_extra=IMAGE_BODY)


def _image_get(
    app: FastAPI, path: str, *, summary: str, response_class: type[Response]
) -> Callable[[Callable], Callable]:
    """``app.get`` for a route that answers with an indexed image's bytes (tagged ``images``)."""
    return app.get(path, tags=["images"], summary=summary, response_class=response_class)


def _new_app(service: SearchService, *, title: str, token_required: bool) -> FastAPI:
    """The bare application, holding the service (closed when the app shuts down)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()  # stop the text-batching thread

    app = FastAPI(
        title=title,
        description="Semantic image search, zero-shot classification and moderation.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.token_required = token_required
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error a JSON ``{"detail": ...}`` with its 4xx/5xx status."""

    @app.exception_handler(UploadError)
    async def _upload(request: Request, e: UploadError):
        return JSONResponse({"detail": str(e)}, status_code=e.status)

    @app.exception_handler(NotFound)
    async def _missing(request: Request, e: NotFound):
        return JSONResponse({"detail": str(e)}, status_code=404)

    @app.exception_handler(NotConfigured)
    async def _off(request: Request, e: NotConfigured):
        return JSONResponse({"detail": str(e)}, status_code=501)

    @app.exception_handler(ValueError)
    async def _bad(request: Request, e: ValueError):
        return JSONResponse({"detail": str(e)}, status_code=400)

    @app.exception_handler(QdrantStoreError)  # the store's fault, not the request's: 503, retry elsewhere
    async def _store_down(request: Request, e: QdrantStoreError):
        log.warning("%s %s: %s", request.method, request.url.path, e)  # (the store's address stays here)
        return JSONResponse({"detail": "the search store is unavailable; try again shortly"}, status_code=503)


def _add_search_routes(app: FastAPI, service: SearchService, read_body: ReadBody) -> None:
    """Health, the filters' choices, and search by text, by indexed image or by upload."""

    @app.get("/api/health", tags=["service"])
    def health() -> dict:
        return service.health()

    @app.get("/api/filters", tags=["search"], summary="folders, file types and date range of the index")
    def filters() -> dict:
        return service.filters()

    @app.get(
        "/api/languages", tags=["search"], summary="the codes `lang` takes: the text tower's language (NLLB-CLIP)"
    )
    def languages() -> dict:
        return service.languages()

    @app.get(
        "/api/prompt-languages",
        tags=["classify"],
        summary="the ISO 639-1 codes `prompt_lang` takes: the built-in template sets in each language",
    )
    def prompt_languages() -> dict:
        return service.prompt_languages()

    @app.get("/api/search", tags=["search"], summary="text search")
    def search_get(
        q: Annotated[str, Query(min_length=1, max_length=1000)],
        params: Annotated[PageQuery, Depends(page_query)],
        lang: Lang = None,
    ) -> dict:
        page = params.page()
        hits = service.search(SearchQuery(text=q, page=page, language=request_language(service, lang)))
        return {"query": q, "offset": page.offset, "hits": hits}

    @app.post("/api/search", tags=["search"], summary="text and/or indexed-image search (JSON)")
    def search_post(req: SearchRequest) -> dict:
        query = SearchQuery(
            text=req.text, image_id=req.id, image_weight=req.image_weight, page=req.page(),
            language=request_language(service, req.lang),
        )  # fmt: skip
        return {"offset": req.offset, "hits": service.search(query)}

    @_image_post(app, "/api/search/image", tag="search", summary="image upload search (body: image bytes)")
    async def search_image(
        request: Request,
        params: Annotated[PageQuery, Depends(page_query)],
        text: Annotated[str | None, Query(max_length=1000)] = None,
        image_weight: Annotated[float, Query(ge=0.0, le=1.0)] = 0.5,
        lang: Lang = None,
    ) -> dict:
        page = params.page()
        language = await run_in_threadpool(request_language, service, lang)  # (may read the vocabulary)
        data = await read_body(request)
        query = SearchQuery(text=text, image_bytes=data, image_weight=image_weight, page=page, language=language)
        hits = await run_in_threadpool(service.search, query)
        return {"offset": page.offset, "hits": hits}


def _add_classify_routes(app: FastAPI, service: SearchService, read_body: ReadBody) -> None:
    """Zero-shot classification and moderation, of an upload or of an indexed image."""

    @_image_post(
        app,
        "/api/classify",
        tag="classify",
        summary="zero-shot classify an upload (body: image bytes); prompt_lang: the templates' language, lang: NLLB's",
    )
    async def classify_upload(
        request: Request,
        labels: Annotated[list[str], Query(description="comma-separated; or repeat the parameter")],
        k: K = 5,
        templates: Templates = None,
        lang: Lang = None,
        prompt_lang: PromptLang = None,
    ) -> dict:
        language = await run_in_threadpool(request_language, service, lang)  # (may read the vocabulary)
        prompt_language = await run_in_threadpool(request_prompt_language, service, templates, prompt_lang)
        data = await read_body(request)
        result = await run_in_threadpool(
            lambda: service.classify(
                split_labels(labels), image_bytes=data, k=k, templates=templates, language=language,
                prompt_language=prompt_language,
            )  # fmt: skip
        )
        return {"labels": result}

    @app.post(
        "/api/classify/indexed",
        tags=["classify"],
        summary="zero-shot classify an indexed image; prompt_lang: the templates' language, lang: NLLB's",
    )
    def classify_indexed(req: ClassifyRequest) -> dict:
        language = request_language(service, req.lang)
        prompt_language = request_prompt_language(service, req.templates, req.prompt_lang)
        return {"labels": service.classify(req.labels, image_id=req.id, k=req.k, templates=req.templates,
                                           language=language, prompt_language=prompt_language)}  # fmt: skip

    @_image_post(app, "/api/moderate", tag="moderate", summary="moderate an upload (body: image bytes)")
    async def moderate_upload(request: Request) -> dict:
        data = await read_body(request)
        return await run_in_threadpool(lambda: service.moderate(image_bytes=data))

    @app.post("/api/moderate/indexed", tags=["moderate"], summary="moderate an indexed image")
    def moderate_indexed(req: ModerateRequest) -> dict:
        return service.moderate(image_id=req.id)


def _add_embed_routes(app: FastAPI, service: SearchService, read_body: ReadBody) -> None:
    """Embeddings of texts and of an uploaded image (unit norm, rounded to 6 decimals)."""

    @app.post("/api/embed/text", tags=["embed"], summary="text embeddings (unit norm)")
    def embed_text(req: EmbedTextRequest) -> dict:
        if any(not t or len(t) > 1000 for t in req.texts):
            raise HTTPException(422, "each text must have 1 to 1000 characters")
        vectors = service.embed_texts(req.texts, request_language(service, req.lang))
        return {"model_id": service.encoder.model_id, "embeddings": np.round(vectors, 6).tolist()}

    @_image_post(app, "/api/embed/image", tag="embed", summary="image embedding (body: image bytes)")
    async def embed_image(request: Request) -> dict:
        data = await read_body(request)
        vector = await run_in_threadpool(service.embed_image, data)
        return {"model_id": service.encoder.model_id, "embedding": np.round(vector, 6).tolist()}


def _add_image_routes(app: FastAPI, service: SearchService) -> None:
    """Thumbnails and original files of indexed images, addressed by id only."""

    @_image_get(app, "/api/thumb/{image_id}", summary="JPEG thumbnail of an indexed image", response_class=Response)
    def thumbnail(image_id: ImageId) -> Response:
        return Response(
            service.thumbnail(image_id),
            media_type="image/jpeg",
            headers={"Cache-Control": "private, max-age=3600"},
        )

    @_image_get(
        app, "/api/image/{image_id}", summary="the original file of an indexed image", response_class=FileResponse
    )
    def original(image_id: ImageId) -> FileResponse:
        path = service.image_path(image_id)
        return FileResponse(path, headers={"Content-Disposition": "inline", "X-Content-Type-Options": "nosniff"})


def _add_page_routes(app: FastAPI) -> None:
    """The web page and its static files (a fixed list: no path ever reaches the file system)."""

    @app.get("/", include_in_schema=False)
    def index_page() -> Response:
        return _static("index.html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in STATIC_FILES:  # a fixed list: no path ever reaches the file system
            raise HTTPException(404, "not found")
        return _static(name)


def _static(name: str) -> Response:
    data = (resources.files("clipforge.serve") / "static" / name).read_bytes()
    return Response(data, media_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"})
