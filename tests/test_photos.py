"""Photo libraries: reduced-size JPEG decoding, photo metadata, HEIC/AVIF through the optional extra."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipforge.config import PreprocessConfig
from clipforge.data.formats import register_optional_formats
from clipforge.data.images import ImageDecodeError, load_image, open_image
from clipforge.data.photos import parse_exif_datetime, photo_info
from clipforge.data.transforms import image_transform

ROOT = Path(__file__).resolve().parents[1]


def scene(width: int, height: int) -> Image.Image:
    """A smooth, asymmetric picture: red left, blue right, a green band along the top, a gradient
    (so orientation and colour mistakes both show, and DCT scaling has detail to keep)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.zeros((height, width, 3), np.float32)
    rgb[..., 0] = np.where(x < width / 2, 220, 30)
    rgb[..., 2] = np.where(x >= width / 2, 200, 20)
    rgb[..., 1] = np.where(y < height / 6, 210, 40)
    rgb += 30 * np.sin(x / 37.0)[..., None] * np.cos(y / 23.0)[..., None]
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def jpeg_bytes(image: Image.Image, **save) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=92, **save)
    return buf.getvalue()


def with_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    """Mean |a - b| per channel value after bringing ``a`` to ``b``'s size (both as RGB)."""
    a = a.convert("RGB").resize(b.size, Image.Resampling.BILINEAR)
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b.convert("RGB"), np.float32)).mean())


# -- reduced-size decoding -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind",
    ["baseline", "progressive", "grayscale", "cmyk", "exif-rotated"],
)
def test_fast_decode_is_reduced_and_looks_like_the_exact_decode(kind):
    image = scene(1600, 1200)
    save = {}
    if kind == "progressive":
        save["progressive"] = True
    if kind == "grayscale":
        image = image.convert("L")
    if kind == "cmyk":
        image = image.convert("CMYK")
    if kind == "exif-rotated":
        save["exif"] = with_orientation(6)  # stored landscape, shown portrait (rotated 90° clockwise)
    data = jpeg_bytes(image, **save)
    exact = load_image(data)
    fast = load_image(data, min_side=448)
    # 1200 / 2 = 600 >= 448 but 1200 / 4 = 300 < 448: half size, same orientation and mode.
    expected = (600, 800) if kind == "exif-rotated" else (800, 600)
    assert exact.size == ((1200, 1600) if kind == "exif-rotated" else (1600, 1200))
    assert fast.size == expected
    assert fast.mode == exact.mode == {"grayscale": "L", "cmyk": "CMYK"}.get(kind, "RGB")
    assert mean_abs_diff(exact, fast) < 3.0  # same picture, same colours, same way up
    if kind == "exif-rotated":
        rgb = np.asarray(fast.convert("RGB"), np.float32)
        # Rotated clockwise: the top band is now the right edge; the red left half is now on top.
        assert rgb[-40:, :, 1].mean() < 100 < rgb[:, -40:, 1].mean()
        assert rgb[: fast.height // 3, :, 0].mean() > 150 > rgb[-fast.height // 3 :, :, 0].mean()
    if kind == "cmyk":
        rgb = np.asarray(fast.convert("RGB"), np.float32)
        assert rgb[:, :200, 0].mean() > 150 and rgb[:, -200:, 2].mean() > 130  # red left, blue right


@pytest.mark.full_suite
def test_fast_decode_picks_the_largest_reduction_that_keeps_twice_the_input():
    data = jpeg_bytes(scene(4032, 3024))
    assert load_image(data, min_side=448).size == (1008, 756)  # 1/4; 1/8 would give 378 < 448
    assert load_image(data, min_side=300).size == (504, 378)  # 1/8
    assert load_image(jpeg_bytes(scene(800, 600)), min_side=448).size == (800, 600)  # 600/2 < 448
    assert load_image(data).size == (4032, 3024)  # no min_side: full size


def test_fast_decode_leaves_other_formats_alone():
    buf = io.BytesIO()
    scene(1600, 1200).save(buf, "PNG")
    assert load_image(buf.getvalue(), min_side=448).size == (1600, 1200)


@pytest.mark.full_suite
def test_fast_preprocessing_stays_close_to_the_reference():
    transform = image_transform(PreprocessConfig(), 224)
    data = jpeg_bytes(scene(4032, 3024), exif=with_orientation(8))
    exact = transform(load_image(data)).flatten()
    fast = transform(load_image(data, min_side=448)).flatten()
    assert not torch.equal(exact, fast)  # really a different decode
    assert float(torch.nn.functional.cosine_similarity(exact, fast, dim=0)) > 0.995


def test_fast_decode_still_refuses_truncated_files():
    data = jpeg_bytes(scene(1600, 1200))
    with pytest.raises(ImageDecodeError, match="cannot decode"):
        load_image(data[: len(data) // 2], min_side=448)


# -- photo metadata ------------------------------------------------------------------------------
def test_photo_info_reads_exif_date_camera_and_displayed_size():
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Canon"
    exif[0x0110] = "Canon EOS 5D"
    exif.get_ifd(0x8769)[0x9003] = "2021:07:04 18:30:05"
    data = jpeg_bytes(scene(640, 480), exif=exif.tobytes())
    label, handle = open_image(data)
    with handle:
        info = photo_info(handle, mtime_ns=0)
    assert info.taken_at == "2021-07-04T18:30:05" and info.taken_from == "exif"
    assert info.camera == "Canon EOS 5D"  # the make is not repeated
    assert (info.width, info.height) == (480, 640)  # orientation 6 shows it portrait
    assert info.type == "jpeg"


def test_photo_info_falls_back_to_the_file_time(tmp_path):
    path = tmp_path / "a.png"
    scene(64, 48).save(path)
    stamp = time.mktime((2019, 3, 2, 10, 11, 12, 0, 0, -1))
    os.utime(path, (stamp, stamp))
    label, handle = open_image(path)
    with handle:
        info = photo_info(handle, mtime_ns=path.stat().st_mtime_ns)
    assert info.taken_at == "2019-03-02T10:11:12" and info.taken_from == "file"
    assert info.camera is None and info.type == "png" and (info.width, info.height) == (64, 48)


@pytest.mark.parametrize("value", ["", "    :  :     :  :  ", "0000:00:00 00:00:00", "garbage", None, 7])
def test_unusable_exif_dates_are_ignored(value):
    assert parse_exif_datetime(value) is None


# -- HEIC / AVIF ---------------------------------------------------------------------------------
def _save(image: Image.Image, path: Path, fmt: str) -> None:
    register_optional_formats()
    image.save(path, fmt, quality=90)


@pytest.mark.parametrize(
    "fmt,ext,kind,plugin", [("HEIF", ".heic", "heif", "pillow_heif"), ("AVIF", ".avif", "avif", None)]
)
def test_heic_and_avif_decode_when_the_extra_is_installed(tmp_path, fmt, ext, kind, plugin):
    if plugin:
        pytest.importorskip(plugin)
    if not register_optional_formats()[kind]:
        pytest.skip(f"no {fmt} support installed")
    path = tmp_path / f"photo{ext}"
    _save(scene(320, 240), path, fmt)
    image = load_image(path, min_side=100)
    assert image.size == (320, 240) and image.mode == "RGB"
    assert mean_abs_diff(image, scene(320, 240)) < 12
    label, handle = open_image(path)
    with handle:
        assert photo_info(handle, mtime_ns=path.stat().st_mtime_ns).type == ("heic" if kind == "heif" else "avif")


@pytest.mark.full_suite
def test_heic_and_avif_without_the_extra_are_reported_with_an_install_hint(tmp_path):
    pytest.importorskip("pillow_heif")
    heic, avif = tmp_path / "a.heic", tmp_path / "b.avif"
    _save(scene(64, 48), heic, "HEIF")
    if not register_optional_formats()["avif"]:
        pytest.skip("no AVIF encoder to make the test file")
    _save(scene(64, 48), avif, "AVIF")
    # A fresh interpreter in which neither plugin can be imported (as without the extra).
    code = (
        "import sys; sys.modules['pillow_heif'] = None; sys.modules['pillow_avif'] = None; "
        "sys.modules['PIL._avif'] = None\n"
        "import warnings; warnings.simplefilter('ignore')\n"
        "from clipforge.data.images import ImageDecodeError, load_image\n"
        "for p in sys.argv[1:]:\n"
        "    try:\n        load_image(p)\n        print('decoded', p)\n"
        "    except ImageDecodeError as e:\n        print(e.reason)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run(
        [sys.executable, "-c", code, str(heic), str(avif)], capture_output=True, text=True, env=env, timeout=120
    )
    lines = out.stdout.strip().splitlines()
    assert lines == [
        "HEIC/HEIF image, but no HEIC/HEIF decoder is installed (pip install 'clipforge[photos]')",
        "AVIF image, but no AVIF decoder is installed (pip install 'clipforge[photos]')",
    ], out.stderr
