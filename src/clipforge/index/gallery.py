"""A self-contained HTML page of search results: thumbnails inlined as data URIs, no network."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from .search import SearchHit
from .thumbs import ThumbnailError, indexed_file, make_thumbnail

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; background: #fafafa; color: #222; }
h1 { font-size: 1.2rem; font-weight: 600; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); gap: 12px; }
figure { margin: 0; background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 6px; }
figure img { width: 100%; height: 170px; object-fit: contain; background: #eee; }
figcaption { font-size: 0.75rem; word-break: break-all; margin-top: 4px; }
.score { font-weight: 600; }
.missing { height: 170px; display: flex; align-items: center; justify-content: center; color: #999; }
"""


def render_gallery(hits: list[SearchHit], root: str | Path, *, title: str, thumb_size: int = 256) -> str:
    """The page as a string; a file that can no longer be read shows as a placeholder."""
    cards = []
    for rank, hit in enumerate(hits, 1):
        label = html.escape(hit.path)
        try:
            data = make_thumbnail(indexed_file(root, hit.path), size=thumb_size)
            picture = f'<img alt="{label}" src="data:image/jpeg;base64,{base64.b64encode(data).decode()}">'
        except ThumbnailError as e:
            picture = f'<div class="missing" title="{html.escape(str(e))}">unavailable</div>'
        relevance = "" if hit.relevance is None else f" relevance {hit.relevance:.2f}"
        cards.append(
            f'<figure>{picture}<figcaption><span class="score">#{rank} {hit.score:.4f}</span>{relevance}<br>'
            f"{label}</figcaption></figure>"
        )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
        f'<body><h1>{html.escape(title)}</h1>\n<div class="grid">\n'
        + "\n".join(cards)
        + "\n</div></body></html>\n"
    )
