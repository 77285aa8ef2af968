"""Running the app with uvicorn (one process; request handlers run in its thread pool)."""

from __future__ import annotations

from fastapi import FastAPI


def run_server(
    app: FastAPI,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    limit_concurrency: int = 256,
    timeout_keep_alive: int = 5,
) -> None:
    """Serve ``app`` until interrupted. ``limit_concurrency`` answers 503 beyond that many open
    requests instead of queueing without bound."""
    try:
        import uvicorn
    except ImportError as e:
        raise ImportError("serving needs uvicorn: pip install 'clipforge[serve]'") from e
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        limit_concurrency=limit_concurrency,
        timeout_keep_alive=timeout_keep_alive,
        server_header=False,
    )
