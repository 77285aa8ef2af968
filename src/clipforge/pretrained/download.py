"""Plain-URL downloads into the cache: resumable, verified, never half-written.

The bytes go to ``<name>.partial`` beside the final file, with a progress bar. A dropped connection
keeps the partial file and the next call resumes it with an HTTP ``Range`` request (a server that
ignores the range makes it start over). Only a file whose SHA-256 matches the expected digest is
renamed to its final name; a mismatch deletes the partial file and names both digests.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..fileio import replace_durably, sha256_file
from ..progress import progress_bar

CHUNK = 1 << 20
TIMEOUT_S = 30.0


class DownloadError(OSError):
    """A download that failed, was interrupted or did not match its digest."""


def offline() -> bool:
    """True when the user turned network access off (``HF_HUB_OFFLINE`` or ``CLIPFORGE_OFFLINE``)."""
    return any(
        os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
        for var in ("HF_HUB_OFFLINE", "CLIPFORGE_OFFLINE")
    )


def download_url(
    url: str,
    target: str | Path,
    *,
    sha256: str,
    progress: bool = True,
    timeout: float = TIMEOUT_S,
) -> Path:
    """Download ``url`` to ``target`` (verified against ``sha256``) unless it is there already.

    Raises :class:`DownloadError` when offline, unreachable, interrupted (the partial file is kept
    for a resume) or when the digest does not match (nothing is kept)."""
    target = Path(target)
    if target.is_file():
        return target  # only verified files ever get the final name
    partial = target.with_name(target.name + ".partial")
    if offline():
        raise DownloadError(
            f"{target.name} is not in the cache and downloads are off (HF_HUB_OFFLINE/CLIPFORGE_OFFLINE): "
            f"download {url} (SHA-256 {sha256}) and put it at {target}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    have = partial.stat().st_size if partial.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (http/https only below)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the partial file is already whole: verify it below
            return _finish(partial, target, url=url, sha256=sha256)
        raise DownloadError(f"cannot download {url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(
            f"cannot download {url} ({reason}). Download it where you have network access and put it at "
            f"{target} (SHA-256 {sha256}), or pass the downloaded file's path as the model"
        ) from e
    with response:
        if urllib.parse.urlsplit(response.geturl()).scheme not in ("http", "https"):
            raise DownloadError(f"{url}: only http(s) downloads are supported")
        resumed = have > 0 and response.status == 206
        if not resumed:
            have = 0  # the server sent the whole file: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with (
            open(partial, "ab" if resumed else "wb") as out,
            progress_bar(
                total=total, initial=have, unit="B", unit_scale=True,
                desc=target.name, enabled=progress, leave=False,
            ) as bar,
        ):  # fmt: skip
            try:
                while block := response.read(CHUNK):
                    out.write(block)
                    bar.update(len(block))
            except OSError as e:  # connection reset, timeout, truncated chunked body
                out.flush()
                raise DownloadError(
                    f"download of {url} was interrupted after {out.tell()} of {total or '?'} bytes ({e}); "
                    "run the same command again to resume"
                ) from e
            out.flush()
            os.fsync(out.fileno())
            if total is not None and out.tell() < total:
                raise DownloadError(
                    f"download of {url} stopped after {out.tell()} of {total} bytes; "
                    "run the same command again to resume"
                )
    return _finish(partial, target, url=url, sha256=sha256)


def _finish(partial: Path, target: Path, *, url: str, sha256: str) -> Path:
    digest = sha256_file(partial)
    if digest != sha256.lower():
        partial.unlink(missing_ok=True)
        raise DownloadError(
            f"{url}: SHA-256 mismatch (expected {sha256.lower()}, got {digest}); the download was discarded "
            "and nothing was cached"
        )
    return replace_durably(partial, target)
