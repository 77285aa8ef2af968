"""Model sources as users have them, at test size: an OpenAI-layout ``.pt``, a transformers folder, an
open_clip folder, a Hugging Face Hub cache holding such repos, and a local HTTP file server that can
corrupt or drop a download (not a test module)."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from convert_utils import perturb, small_tokenizer
from factories import tiny_model_config

from clipforge.config import ModelConfig
from clipforge.convert.export import export_open_clip
from clipforge.convert.open_clip import to_open_clip
from clipforge.models import CLIP

OPENAI_VOCAB = 49408


def openai_config(act: str = "quick_gelu") -> ModelConfig:
    """OpenAI's layout at test size: ViT-B-16 shrunk, with 64-wide heads (OpenAI's rule), OpenAI's
    vocabulary, 32 px images and one text layer."""
    return tiny_model_config(
        "ViT-B-16", act=act, name="tiny-openai", image_size=32, vocab_size=OPENAI_VOCAB,
        vision={"width": 64, "head_width": 64}, text={"width": 64, "layers": 1, "head_width": 64},
    )  # fmt: skip


def openai_pt(path: Path, *, seed: int = 0) -> CLIP:
    """An OpenAI-release-style state dict (``torch.save``, OpenAI's names and marker tensors)."""
    torch.manual_seed(seed)
    model = perturb(CLIP(openai_config()).eval(), 0.02)
    sd = to_open_clip(model.state_dict())
    cfg = model.config
    markers = {
        "input_resolution": torch.tensor(cfg.vision.image_size),
        "context_length": torch.tensor(cfg.text.context_length),
        "vocab_size": torch.tensor(cfg.text.vocab_size),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**sd, **markers}, path)
    return model


def open_clip_folder(path: Path, *, seed: int = 1) -> CLIP:
    """``open_clip_config.json`` + ``open_clip_model.safetensors`` (open_clip's Hub layout)."""
    torch.manual_seed(seed)
    model = perturb(CLIP(openai_config(act="gelu")).eval(), 0.02)
    export_open_clip(model, path)
    for extra in ("vocab.json", "merges.txt"):  # open_clip repos carry no tokenizer files
        (path / extra).unlink(missing_ok=True)
    return model


def transformers_folder(path: Path, *, seed: int = 2):
    """A random-weight transformers ``CLIPModel`` saved by transformers itself, with tokenizer files."""
    import transformers

    torch.manual_seed(seed)
    tok = small_tokenizer()
    cfg = transformers.CLIPConfig(
        text_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=16, vocab_size=tok.vocab_size, hidden_act="quick_gelu",
            bos_token_id=tok.vocab_size - 2, eos_token_id=tok.vocab_size - 1, pad_token_id=0,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            image_size=32, patch_size=16, hidden_act="quick_gelu",
        ),
        projection_dim=24,
    )  # fmt: skip
    model = perturb(transformers.CLIPModel(cfg).eval(), 0.02)
    model.save_pretrained(path)
    tok.save_hf(path)
    return model


def hub_repo(cache: Path, repo_id: str, source: Path, *, commit: str = "0" * 39 + "1") -> Path:
    """Lay ``source``'s files out as ``huggingface_hub`` caches a downloaded repo: content-addressed
    blobs, a ``snapshots/<commit>`` folder of links to them, and ``refs/main``. Returns the snapshot."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for f in sorted(p for p in source.iterdir() if p.is_file()):
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        blob = repo / "blobs" / digest
        if not blob.exists():
            shutil.copyfile(f, blob)
        link = snapshot / f.name
        link.unlink(missing_ok=True)
        link.symlink_to(Path("../../blobs") / digest)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


class FileServer:
    """Serves one payload at ``/<name>`` on 127.0.0.1 with ``Range`` support. ``drop_after`` closes the
    connection after that many body bytes (once); ``corrupt`` flips a byte of every response."""

    def __init__(self, payload: bytes, name: str = "weights.pt") -> None:
        self.payload, self.name = payload, name
        self.drop_after: int | None = None
        self.corrupt = False
        self.requests: list[dict[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.name}"

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.requests.append(dict(self.headers))
                if self.path != f"/{server.name}":
                    self.send_error(404)
                    return
                body, start = server.payload, 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[len("bytes=") :].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                part = body[start:]
                if server.corrupt:
                    part = bytes([part[0] ^ 0xFF]) + part[1:]
                self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                if server.drop_after is not None:
                    self.wfile.write(part[: server.drop_after])
                    self.wfile.flush()
                    server.drop_after = None
                    self.close_connection = True
                    return
                self.wfile.write(part)

        return Handler

    @contextmanager
    def running(self) -> Iterator[FileServer]:
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = httpd.server_address[1]
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=5)


def registry_with(monkeypatch, **entries: dict) -> None:
    """Add entries to the pretrained registry for one test."""
    from clipforge.pretrained import registry

    current = dict(registry._registry())
    current.update({name: registry._entry(name, data) for name, data in entries.items()})
    monkeypatch.setattr(registry, "_registry", lambda: current)


def write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path
