"""Optional photo formats: HEIC/HEIF (phones) and AVIF, through Pillow plugins when installed.

Pillow reads JPEG, PNG, WebP, GIF, BMP and TIFF by itself. HEIC/HEIF needs ``pillow-heif``; AVIF is
built into Pillow since 11.3 (older Pillow reads it with ``pillow-avif-plugin``). Both come with
``pip install 'clipforge[photos]'``. :func:`register_optional_formats` registers whatever is
installed, once per process (DataLoader workers call it too, through ``load_image``), and
:func:`missing_format_hint` turns "not a recognised image format" into an install hint when the
file is one of these formats and its plugin is absent, so such files are reported, never silently
dropped.
"""

from __future__ import annotations

import functools
import os

from PIL import features

INSTALL_HINT = "pip install 'clipforge[photos]'"

# ISO base media file brands (bytes 8..12 of an "ftyp" box) of each optional format.
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")
_AVIF_BRANDS = (b"avif", b"avis")
HEIF_EXTENSIONS = (".heic", ".heif")
AVIF_EXTENSIONS = (".avif",)


@functools.lru_cache(maxsize=1)
def register_optional_formats() -> dict[str, bool]:
    """Register the installed plugins with Pillow; ``{"heif": bool, "avif": bool}`` says which work."""
    heif = False
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
        heif = True
    except ImportError:
        pass
    avif = bool(features.check("avif"))
    if not avif:
        try:
            import pillow_avif  # noqa: F401  (registers itself on import)

            avif = True
        except ImportError:
            pass
    return {"heif": heif, "avif": avif}


def sniff_optional_format(head: bytes, name: str = "") -> str | None:
    """``"heif"``, ``"avif"`` or None, from the first bytes of a file (or, failing that, its name)."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _AVIF_BRANDS:
            return "avif"
        if brand in _HEIF_BRANDS:
            return "heif"
    ext = os.path.splitext(name)[1].lower()
    if ext in HEIF_EXTENSIONS:
        return "heif"
    if ext in AVIF_EXTENSIONS:
        return "avif"
    return None


def missing_format_hint(head: bytes, name: str = "") -> str | None:
    """The skip reason for a HEIC/AVIF file this installation cannot read, else None."""
    kind = sniff_optional_format(head, name)
    if kind is None or register_optional_formats()[kind]:
        return None
    label = "HEIC/HEIF" if kind == "heif" else "AVIF"
    return f"{label} image, but no {label} decoder is installed ({INSTALL_HINT})"
