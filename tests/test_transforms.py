"""Image preprocessing: exact parity with open_clip/torchvision, train crops, uint8 fast path, loading.

Golden tensors come from tests/assets/transforms/make_golden.py (run in the open_clip environment);
the live reference test runs only where open_clip and torchvision import.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipforge.config import OPENAI_MEAN, OPENAI_STD, PreprocessConfig
from clipforge.data.images import (
    IMAGE_EXTENSIONS,
    ImageDecodeError,
    is_image_file,
    load_image,
)
from clipforge.data.transforms import (
    ImageTransform,
    center_crop_box,
    image_transform,
    normalize_uint8,
    pil_to_uint8,
    random_resized_crop_box,
    shortest_side_size,
    to_rgb,
)

ASSETS = Path(__file__).parent / "assets" / "transforms"
META = json.loads((ASSETS / "golden.json").read_text())
IMAGE_NAMES = sorted(META["modes"])


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(ASSETS / "golden.npz") as data:
        return {key: data[key] for key in data.files}


def open_asset(name: str) -> Image.Image:
    with Image.open(ASSETS / name) as image:
        image.load()
        return image.copy()  # detached from the file


def preprocess_from(kwargs: dict) -> PreprocessConfig:
    return PreprocessConfig(
        mean=tuple(kwargs.get("mean", OPENAI_MEAN)),
        std=tuple(kwargs.get("std", OPENAI_STD)),
        interpolation=kwargs.get("interpolation", "bicubic"),
        resize_mode=kwargs.get("resize_mode", "shortest"),
    )


def rgb_noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


# --------------------------------------------------------------------------- golden parity


def test_golden_covers_every_mode():
    modes = set(META["modes"].values())
    assert {"RGB", "RGBA", "P", "LA", "L", "1", "CMYK", "I;16", "I", "F"} <= modes
    assert any(name.startswith("exif_") for name in IMAGE_NAMES)


@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_eval_transform_equals_open_clip_golden(name, golden):
    with Image.open(ASSETS / name) as image:  # as open_clip sees it: no EXIF rotation
        assert image.mode == META["modes"][name]
        for config, kwargs in META["eval_configs"].items():
            transform = image_transform(preprocess_from(kwargs), kwargs["image_size"])
            ours = transform(image)
            ref = torch.from_numpy(golden[f"{name}|{config}"])
            assert ours.dtype == torch.float32 and ours.shape == ref.shape, config
            assert torch.equal(ours, ref), f"{config}: max diff {(ours - ref).abs().max().item()}"


@pytest.mark.parametrize("name", META["train"]["images"])
def test_train_transform_equals_open_clip_golden_under_same_seed(name, golden):
    transform = image_transform(PreprocessConfig(), META["train"]["image_size"], train=True)
    image = open_asset(name)
    for seed in META["train"]["seeds"]:
        torch.manual_seed(seed)
        ours = transform(image)
        ref = torch.from_numpy(golden[f"{name}|train-32-seed{seed}"])
        assert torch.equal(ours, ref), f"seed {seed}: max diff {(ours - ref).abs().max().item()}"


@pytest.mark.reference
def test_live_parity_with_open_clip():
    open_clip = pytest.importorskip("open_clip", reason="open_clip (with torchvision) is not installed")
    rng = np.random.default_rng(7)
    sizes = [(1, 1), (2, 3), (3, 500), (500, 3), (225, 224), (224, 225), (97, 31), (64, 64), (63, 65)]
    sizes += [tuple(int(v) for v in rng.integers(1, 300, 2)) for _ in range(8)]
    modes = ["RGB", "RGBA", "P", "LA", "L", "1", "CMYK", "I", "F"]
    for i, (w, h) in enumerate(sizes):
        base = rgb_noise(w, h, seed=i)
        for mode in modes:
            image = base.convert(mode)
            for size in (32, 48):
                for resize_mode in ("shortest", "squash"):
                    for interp in ("bicubic", "bilinear"):
                        ref_t = open_clip.image_transform(
                            size, is_train=False, resize_mode=resize_mode, interpolation=interp
                        )
                        ours_t = image_transform(
                            PreprocessConfig(interpolation=interp, resize_mode=resize_mode), size
                        )
                        ref, ours = ref_t(image), ours_t(image)
                        assert torch.equal(ours, ref), (w, h, mode, size, resize_mode, interp)
            ref_t = open_clip.image_transform(32, is_train=True)
            ours_t = image_transform(PreprocessConfig(), 32, train=True)
            for seed in range(3):
                torch.manual_seed(seed)
                ref = ref_t(image)
                torch.manual_seed(seed)
                assert torch.equal(ours_t(image), ref), (w, h, mode, "train", seed)


# --------------------------------------------------------------------------- geometry helpers


@pytest.mark.parametrize(
    ("hw", "size", "expected"),
    [
        ((500, 3), 32, (5333, 32)),
        ((3, 500), 32, (32, 5333)),
        ((224, 225), 32, (32, 32)),
        ((677, 1000), 64, (64, 94)),
        ((1, 1), 32, (32, 32)),
        ((40, 40), 32, (32, 32)),
    ],
)
def test_shortest_side_size_truncates_long_side(hw, size, expected):
    assert shortest_side_size(*hw, size) == expected


def test_center_crop_box_rounds_half_to_even():
    # (H - size) / 2 = 0.5 → 0 and 1.5 → 2 (Python's round), as torchvision's center_crop.
    assert center_crop_box(33, 32, 32) == (0, 0, 32, 32)
    assert center_crop_box(32, 35, 32) == (2, 0, 34, 32)
    assert center_crop_box(40, 94, 32) == (31, 4, 63, 36)
    with pytest.raises(ValueError, match="cannot center-crop"):
        center_crop_box(31, 40, 32)


# --------------------------------------------------------------------------- eval transform


@pytest.mark.parametrize("resize_mode", ["shortest", "squash"])
@pytest.mark.parametrize("wh", [(1, 1), (3, 500), (500, 3), (40, 32), (1000, 677)])
def test_eval_output_shape_and_dtype(resize_mode, wh):
    transform = image_transform(PreprocessConfig(resize_mode=resize_mode), 32)
    out = transform(rgb_noise(*wh))
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32 and out.is_contiguous()
    assert torch.isfinite(out).all()


def test_eval_is_deterministic_and_ignores_global_rng():
    transform = image_transform(PreprocessConfig(), 32)
    image = rgb_noise(50, 70)
    state = torch.get_rng_state()
    a = transform(image)
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(a, transform(image))


def test_transform_pickles_and_keeps_behaviour():
    for train in (False, True):
        transform = image_transform(
            PreprocessConfig(interpolation="bilinear"), 32, train=train, scale=(0.5, 1.0)
        )
        clone = pickle.loads(pickle.dumps(transform))
        assert isinstance(clone, ImageTransform) and repr(clone) == repr(transform)
        image = rgb_noise(60, 45)
        torch.manual_seed(3)
        a = transform(image)
        torch.manual_seed(3)
        assert torch.equal(a, clone(image))


def test_transform_does_not_modify_input():
    image = rgb_noise(80, 50).convert("RGBA")
    before = image.tobytes()
    image_transform(PreprocessConfig(), 32)(image)
    image_transform(PreprocessConfig(), 32, train=True)(image)
    assert image.tobytes() == before and image.mode == "RGBA" and image.size == (80, 50)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="image_size"):
        image_transform(PreprocessConfig(), 0)
    with pytest.raises(ValueError, match="scale"):
        image_transform(PreprocessConfig(), 32, train=True, scale=(1.0, 0.5))
    with pytest.raises(ValueError, match="ratio"):
        image_transform(PreprocessConfig(), 32, train=True, ratio=(2.0, 1.0))
    with pytest.raises(Exception, match="interpolation"):
        image_transform(PreprocessConfig(interpolation="nearest"), 32)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="PIL"):
        image_transform(PreprocessConfig(), 32)(np.zeros((4, 4, 3), np.uint8))  # type: ignore[arg-type]


def test_unconvertible_mode_names_the_mode():
    image = Image.new("La", (40, 40))
    with pytest.raises(ValueError, match="'La'"):
        image_transform(PreprocessConfig(), 32)(image)


# --------------------------------------------------------------------------- train transform


def test_train_shape_and_seeded_determinism():
    transform = image_transform(PreprocessConfig(), 32, train=True, scale=(0.3, 1.0))
    image = rgb_noise(120, 90)
    torch.manual_seed(0)
    a = [transform(image) for _ in range(4)]
    torch.manual_seed(0)
    b = [transform(image) for _ in range(4)]
    assert all(x.shape == (3, 32, 32) and x.dtype == torch.float32 for x in a)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], a[1])  # the crops differ from draw to draw


def test_random_resized_crop_box_stays_inside_and_respects_ranges():
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    fallbacks = 0
    for _ in range(400):
        height, width = (int(v) for v in rng.integers(1, 400, 2))
        scale = (0.9, 1.0) if rng.random() < 0.5 else (0.08, 1.0)
        top, left, h, w = random_resized_crop_box(
            height, width, scale=scale, ratio=(3 / 4, 4 / 3), generator=gen
        )
        assert 0 <= top and 0 <= left and 1 <= h and 1 <= w
        assert top + h <= height and left + w <= width
        centred = top == (height - h) // 2 and left == (width - w) // 2
        if not centred:  # a sampled box (a centred one may be either kind): area and ratio in range
            assert scale[0] * 0.8 <= h * w / (height * width) <= scale[1] * 1.25
            assert 0.5 <= w / h <= 2.0
        fallbacks += centred
    assert fallbacks < 400


def test_random_resized_crop_fallback_is_centred_and_ratio_clamped():
    gen = torch.Generator().manual_seed(0)
    # 3 wide, 500 tall: no 90%-area box with ratio >= 3/4 fits, so the centre fallback keeps the
    # width and cuts the height to width / (3/4) = 4 rows.
    assert random_resized_crop_box(500, 3, scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3), generator=gen) == (
        248,
        0,
        4,
        3,
    )
    assert random_resized_crop_box(3, 500, scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3), generator=gen) == (
        0,
        248,
        3,
        4,
    )


class RepeatedImage(torch.utils.data.Dataset):
    """The same image four times: any difference between items comes from the transform's RNG."""

    def __init__(self, transform: ImageTransform) -> None:
        self.transform = transform
        self.image = rgb_noise(64, 64)

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(self.image)


def test_train_uses_global_rng_so_dataloader_workers_differ():
    dataset = RepeatedImage(image_transform(PreprocessConfig(), 16, train=True, scale=(0.1, 1.0)))

    def run() -> torch.Tensor:
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=1, num_workers=2, generator=torch.Generator().manual_seed(5)
        )
        return torch.cat(list(loader))  # (4, 3, 16, 16)

    a, b = run(), run()
    assert torch.equal(a, b)  # reproducible from the loader's seed
    assert len({x.numpy().tobytes() for x in a}) == 4  # every draw differs, across and within workers


# --------------------------------------------------------------------------- uint8 fast path


@pytest.mark.parametrize("train", [False, True])
def test_normalize_uint8_equals_pil_path(train):
    pre = PreprocessConfig()
    transform = image_transform(pre, 32, train=train)
    images = [rgb_noise(70, 41, seed=1), open_asset("rgba_37x53.png"), open_asset("p_61x40.png")]
    torch.manual_seed(0)
    expected = torch.stack([transform(im) for im in images])
    torch.manual_seed(0)
    cached = torch.stack(
        [pil_to_uint8(to_rgb(transform.resize_and_crop(im))) for im in images]
    )  # (B, S, S, 3)
    assert cached.dtype == torch.uint8 and cached.shape == (3, 32, 32, 3)
    out = normalize_uint8(cached, pre.mean, pre.std)
    assert out.shape == (3, 3, 32, 32) and out.is_contiguous()
    assert torch.equal(out, expected)


def test_normalize_uint8_arithmetic():
    batch = torch.arange(256, dtype=torch.uint8).view(1, 16, 16, 1).expand(2, 16, 16, 3).contiguous()
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    out = normalize_uint8(batch, mean, std).double()
    x = batch.permute(0, 3, 1, 2).double() / 255
    ref = (x - torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert (out - ref).abs().max() < 1e-6


def test_normalize_uint8_rejects_bad_input():
    with pytest.raises(TypeError, match="uint8"):
        normalize_uint8(torch.zeros(1, 4, 4, 3), OPENAI_MEAN, OPENAI_STD)
    with pytest.raises(ValueError, match="B, H, W, 3"):
        normalize_uint8(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), OPENAI_MEAN, OPENAI_STD)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_normalize_uint8_on_cuda_matches_cpu():
    batch = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    cpu = normalize_uint8(batch, OPENAI_MEAN, OPENAI_STD)
    gpu = normalize_uint8(batch.cuda(), OPENAI_MEAN, OPENAI_STD)
    assert gpu.device.type == "cuda"
    assert (gpu.cpu() - cpu).abs().max() <= 1e-6


# --------------------------------------------------------------------------- load_image


def test_image_extensions():
    assert set(IMAGE_EXTENSIONS) == {
        ".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif"
    }  # the last three through the `photos` extra (reported with an install hint without it)
    assert is_image_file("a/B.JPG") and is_image_file(Path("x.tiff")) and not is_image_file("x.txt")
    assert is_image_file("IMG_0001.HEIC") and is_image_file("photo.avif")


def test_load_image_applies_exif_rotation():
    raw = open_asset("exif_rot6_40x24.jpg")
    assert raw.size == (40, 24)
    loaded = load_image(ASSETS / "exif_rot6_40x24.jpg")
    assert loaded.size == (24, 40)
    assert loaded.tobytes() == raw.transpose(Image.Transpose.ROTATE_270).tobytes()
    assert 0x0112 not in loaded.getexif() or loaded.getexif()[0x0112] == 1


def test_load_image_accepts_bytes_and_is_detached(tmp_path):
    path = tmp_path / "x.png"
    rgb_noise(30, 20).save(path)
    image = load_image(path)
    path.unlink()  # nothing still reads the file
    assert image.size == (30, 20) and image.mode == "RGB"
    from_bytes = load_image((ASSETS / "rgb_20x13.png").read_bytes())
    assert np.array_equal(np.asarray(from_bytes), np.asarray(open_asset("rgb_20x13.png")))


def test_load_image_animated_gif_gives_first_frame():
    with Image.open(ASSETS / "p_anim_29x31.gif") as gif:
        assert gif.n_frames == 2
        first = gif.convert("RGB")
        gif.seek(1)
        second = gif.convert("RGB")
    loaded = load_image(ASSETS / "p_anim_29x31.gif")
    assert loaded.convert("RGB").tobytes() == first.tobytes() != second.tobytes()


def test_load_image_rescales_16_bit_to_8_bit():
    with Image.open(ASSETS / "i16_48x36.png") as raw:
        assert raw.mode == "I;16"
        sixteen = np.array(raw)
    loaded = load_image(ASSETS / "i16_48x36.png")
    assert loaded.mode == "L"
    assert np.array_equal(np.asarray(loaded), (sixteen >> 8).astype(np.uint8))
    # Not the near-white image Pillow's clipping convert("RGB") would give.
    assert abs(image_transform(PreprocessConfig(), 32)(loaded).mean().item()) < 1.0


def test_load_image_missing_file(tmp_path):
    with pytest.raises(ImageDecodeError, match="no such file") as info:
        load_image(tmp_path / "nope.jpg")
    assert info.value.path.endswith("nope.jpg")
    with pytest.raises(ImageDecodeError, match="not a regular file"):
        load_image(tmp_path)


def test_load_image_text_file_named_jpg(tmp_path):
    path = tmp_path / "fake.jpg"
    path.write_text("this is not a jpeg\n")
    with pytest.raises(ImageDecodeError, match="not a recognised image") as info:
        load_image(path)
    assert info.value.path == str(path)


def test_load_image_truncated_jpeg(tmp_path):
    data = (ASSETS / "rgb_1000x677.jpg").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="cannot decode"):
        load_image(path)
    with pytest.raises(ImageDecodeError, match="member.jpg"):
        load_image(data[: len(data) // 3], name="shard-0.tar/member.jpg")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels but carries almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def test_load_image_decompression_bomb():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no Pillow DecompressionBombWarning leaks out
        # Between Pillow's warning and error thresholds: our own max_pixels check refuses it.
        with pytest.raises(ImageDecodeError, match="max_pixels"):
            load_image(png_header_only(12_000, 12_000))
        # Above Pillow's hard limit: Pillow's error, reported as ours.
        with pytest.raises(ImageDecodeError, match="decompression bomb"):
            load_image(png_header_only(100_000, 100_000), max_pixels=10**12)
        with pytest.raises(ImageDecodeError, match="max_pixels=100"):
            load_image(ASSETS / "rgb_32x32.png", max_pixels=100)
    assert load_image(ASSETS / "rgb_32x32.png", max_pixels=32 * 32).size == (32, 32)


def test_image_decode_error_pickles():
    err = pickle.loads(pickle.dumps(ImageDecodeError("a.jpg", "truncated")))
    assert isinstance(err, ImageDecodeError) and err.path == "a.jpg" and str(err) == "a.jpg: truncated"


def test_load_image_corrupt_png_body():
    data = bytearray(io.BytesIO((ASSETS / "rgb_225x224.png").read_bytes()).getvalue())
    data[200:260] = bytes(60)  # zero part of the compressed stream
    with pytest.raises(ImageDecodeError):
        load_image(bytes(data))
