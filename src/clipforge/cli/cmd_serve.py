"""clipforge serve CKPT --db photos.cfidx: HTTP API + web page for an image index.

Starts a web server: the page at /, the JSON API under /api, OpenAPI docs at /docs. Binds to
127.0.0.1 unless --host says otherwise. With --store qdrant://HOST:PORT/COLLECTION the server keeps
no index of its own: several can run behind one address (docs/deploy.md).
"""

from __future__ import annotations

import argparse
import os
import socket

from ._apps import (
    FROM_INDEX,
    MODEL_HELP,
    add_backend_arg,
    add_device_arg,
    add_language_arg,
    add_precision_arg,
    add_prompt_language_arg,
)
from ._stores import add_store_args, open_store_from_args

HELP = "serve search, classify, moderate and embed over HTTP, with a web page"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="MODEL", help=MODEL_HELP + "; the one the index was built with")
    add_store_args(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    add_device_arg(p)
    add_precision_arg(p, default=None, default_says=FROM_INDEX)
    add_backend_arg(p, default=None, default_says=FROM_INDEX)
    p.add_argument("--policy", help="moderation policy YAML (enables /api/moderate)")
    add_language_arg(p, of="queries and labels, unless a request names its own (lang=)")
    p.add_argument(
        "--templates",
        default="default",
        help="the built-in template set of classify requests that name none (templates=; default: default)",
    )
    add_prompt_language_arg(p, of="the --templates set, unless a classify request names its own (prompt_lang=)")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest accepted upload (default: 10)")
    p.add_argument("--max-megapixels", type=float, default=40.0, help="largest accepted image (default: 40)")
    p.add_argument("--nprobe", type=int, default=None, help="ANN lists to probe (default: calibrated)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads for the model")
    p.add_argument(
        "--token",
        default=None,
        help="access token required on every route (default: $CLIPFORGE_TOKEN); needed to expose the "
        "service beyond this machine safely",
    )
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name clients use to reach the server (repeatable; loopback names and --host are "
        "always allowed; '*' allows any)",
    )


def allowed_hosts(host: str, extra: list[str]) -> list[str]:
    """Loopback names, the bound address (when specific) and the names given with --allow-host."""
    from ..serve.security import LOOPBACK_HOSTS

    names = [*LOOPBACK_HOSTS, *extra]
    if host not in ("0.0.0.0", "::", ""):
        names.append(host)
    else:  # every interface: this machine's own name is the one clients will most often use
        names.append(socket.gethostname())
    return names


def run(args: argparse.Namespace) -> int:
    from ..serve import SearchService, create_app, run_server
    from ..serve.security import TOKEN_ENV

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    service = SearchService.from_paths(
        args.checkpoint,
        open_store_from_args(args),
        device=args.device,
        precision=args.precision,
        backend=args.backend,
        policy=args.policy,
        max_pixels=int(args.max_megapixels * 1_000_000),
        nprobe=args.nprobe,
        language=args.language,
        templates=args.templates,
        prompt_language=args.prompt_language,
    )
    token = args.token or os.environ.get(TOKEN_ENV) or None
    app = create_app(
        service,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        allowed_hosts=allowed_hosts(args.host, args.allow_host),
        token=token,
    )
    login = "?token=…" if token else ""
    print(f"serving {service.health()['images']} images on http://{args.host}:{args.port}/{login} (API docs: /docs)")
    run_server(app, host=args.host, port=args.port)
    return 0
