"""Bad inputs are clear errors naming the problem, and nothing from a checkpoint is ever executed."""

import json
import pickle
import zipfile

import pytest
import torch
from convert_utils import ASSETS
from hostile import zip_bomb
from safetensors.torch import load_file, save_file

from clipforge.config import ConfigError
from clipforge.convert import ConvertError, import_model, open_clip, read_tensors


class _RunsCode:
    """Unpickling this calls exec(): it writes a marker file if a loader ever executes pickled code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


def malicious_pickle(marker) -> bytes:
    return pickle.dumps({"visual.conv1.weight": _RunsCode(marker)}, protocol=2)


def test_plain_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.pt").write_bytes(malicious_pickle(marker))
    with pytest.raises(ConvertError, match="refused to unpickle.*Nothing was executed"):
        import_model(tmp_path / "evil.pt", format="openai")
    assert not marker.exists()


def test_torch_zip_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    with zipfile.ZipFile(tmp_path / "evil.pt", "w") as zf:
        zf.writestr("archive/data.pkl", malicious_pickle(marker))
        zf.writestr("archive/version", "3\n")
    with pytest.raises(ConvertError, match="refused to unpickle"):
        read_tensors(tmp_path / "evil.pt")
    assert not marker.exists()


def test_torchscript_archive_that_would_run_code_is_refused(tmp_path):
    """A TorchScript-shaped zip goes through our own restricted unpickler (torch.jit.load is never used)."""
    marker = tmp_path / "pwned"
    with zipfile.ZipFile(tmp_path / "evil.pt", "w") as zf:
        zf.writestr("model/data.pkl", malicious_pickle(marker))
        zf.writestr("model/constants.pkl", pickle.dumps((), protocol=2))
        zf.writestr("model/code/__torch__.py", f"open({str(marker)!r}, 'w')\n")
    with pytest.raises(ConvertError, match=r"refusing to load global '(__builtin__|builtins)\.exec'"):
        import_model(tmp_path / "evil.pt")
    assert not marker.exists()


def test_real_archive_code_is_never_run(tmp_path):
    """The golden archive's TorchScript code made to touch a file: reading works, the file never appears."""
    marker = tmp_path / "pwned"
    with zipfile.ZipFile(ASSETS / "openai_vit.jit.pt") as src, zipfile.ZipFile(tmp_path / "m.pt", "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if "/code/" in item.filename and item.filename.endswith(".py"):
                data = f"open({str(marker)!r}, 'w')\n".encode() + data
            dst.writestr(item, data)
    assert import_model(tmp_path / "m.pt").format == "openai"
    assert not marker.exists()


@pytest.mark.parametrize("asset", ["openai_vit.jit.pt", "openai_vit.pt", "vit_b32.safetensors"])
def test_truncated_files(tmp_path, asset):
    data = (ASSETS / asset).read_bytes()
    (tmp_path / asset).write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ConvertError, match=r"truncated|corrupt|not a checkpoint"):
        import_model(tmp_path / asset, model=ASSETS / "vit_b32.json" if "vit_b32" in asset else None)


@pytest.mark.parametrize("content", [b"hello, not a model\n", b"\x89PNG\r\n\x1a\n" + bytes(100), b"{}"])
def test_files_of_the_wrong_kind(tmp_path, content):
    (tmp_path / "x.pt").write_bytes(content)
    with pytest.raises(ConvertError, match="not a checkpoint"):
        import_model(tmp_path / "x.pt")


def test_non_tensor_payload_and_unknown_names(tmp_path):
    torch.save({"epoch": 1, "weights": [1, 2]}, tmp_path / "a.pt")
    with pytest.raises(ConvertError, match="not tensors"):
        import_model(tmp_path / "a.pt")
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "b.pt")
    with pytest.raises(ConvertError, match="no CLIP parameters"):
        import_model(tmp_path / "b.pt")
    with pytest.raises(ConvertError, match="holds no known checkpoint"):
        import_model(tmp_path)
    with pytest.raises(FileNotFoundError):
        import_model(tmp_path / "missing.pt")


def test_missing_and_leftover_tensors_are_named(tmp_path):
    sd = load_file(str(ASSETS / "vit_b32.safetensors"))
    broken = {k: v for k, v in sd.items() if k != "visual.transformer.resblocks.1.mlp.c_fc.bias"}
    save_file(broken, str(tmp_path / "missing.safetensors"))
    with pytest.raises(
        ConvertError, match=r"missing 1 tensor\(s\): visual\.transformer\.blocks\.1\.mlp\.fc1\.bias"
    ):
        import_model(tmp_path / "missing.safetensors", model=ASSETS / "vit_b32.json")
    save_file({**sd, "visual.extra_head.weight": torch.zeros(3)}, str(tmp_path / "extra.safetensors"))
    with pytest.raises(ConvertError, match=r"unexpected 1 tensor\(s\): visual\.extra_head\.weight"):
        import_model(tmp_path / "extra.safetensors", model=ASSETS / "vit_b32.json")


def test_architectures_we_cannot_map(tmp_path):
    sd = load_file(str(ASSETS / "vit_b32.safetensors"))
    save_file(
        {**sd, "visual.transformer.resblocks.0.ls_1.gamma": torch.ones(32)}, str(tmp_path / "ls.safetensors")
    )
    with pytest.raises(ConvertError, match="layer scale"):
        import_model(tmp_path / "ls.safetensors", model=ASSETS / "vit_b32.json")
    no_ln_pre = {k: v for k, v in sd.items() if not k.startswith("visual.ln_pre")}
    save_file(no_ln_pre, str(tmp_path / "noln.safetensors"))
    with pytest.raises(ConvertError, match="no_ln_pre"):
        import_model(tmp_path / "noln.safetensors", act="gelu")


@pytest.mark.parametrize(
    "vision,text,match",
    [
        ({"timm_model_name": "vit_base_patch16_224"}, {}, "timm_model_name"),
        ({"attentional_pool": True}, {}, "attentional_pool"),
        ({"no_ln_pre": True}, {}, "no_ln_pre"),
        ({"final_ln_after_pool": True}, {}, "final_ln_after_pool"),
        ({}, {"hf_model_name": "xlm-roberta-base"}, "hf_model_name"),
        ({}, {"pool_type": "last"}, "pool_type"),
        ({}, {"mystery_option": 1}, "unknown open_clip option text_cfg.mystery_option"),
    ],
)
def test_open_clip_configs_we_cannot_map(vision, text, match):
    cfg = json.loads((ASSETS / "vit_b32.json").read_text())
    cfg["vision_cfg"].update(vision)
    cfg["text_cfg"].update(text)
    with pytest.raises(ConfigError, match=match):
        open_clip.config_from(cfg)


def test_open_clip_config_defaults_are_accepted():
    cfg = json.loads((ASSETS / "vit_b32.json").read_text())
    cfg["vision_cfg"].update(no_ln_pre=False, pool_type="tok", patch_dropout=0.0, output_tokens=False)
    cfg["text_cfg"].update(pool_type="argmax", proj_bias=False, hf_tokenizer_name="")
    cfg["custom_text"] = True
    assert open_clip.config_from(cfg).vision.patch_size == 32


def test_unknown_model_name_points_to_config_json():
    with pytest.raises(ConvertError, match=r'pass their config JSON as `model="CONFIG\.json"`'):
        import_model(ASSETS / "vit_b32.safetensors", model="ViT-bigG-14")


def test_cli_says_flags_where_the_library_names_parameters(tmp_path, capsys):
    from clipforge.cli.main import main

    assert main(["convert", str(ASSETS / "vit_b32.safetensors"), str(tmp_path / "out"), "--model", "ViT-bigG-14"]) == 1
    err = capsys.readouterr().err
    assert "pass their config JSON as --model CONFIG.json (open_clip/model_configs/ViT-bigG-14.json)" in err
    assert "model=" not in err


@pytest.mark.full_suite
def test_zip_bomb_is_refused_from_declared_sizes_with_bounded_memory(tmp_path):
    import subprocess
    import sys

    bomb = zip_bomb(tmp_path / "bomb.pt")  # 256 MiB inflated from ~260 kB
    assert bomb.stat().st_size < 4 * 1024 * 1024
    # a fresh process: peak RSS after reading a good file, then after meeting the bomb
    code = (
        "import resource, sys\n"
        "from clipforge.convert import ConvertError, read_tensors\n"
        "peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "read_tensors(sys.argv[2])\nbase = peak()\n"
        "try:\n    read_tensors(sys.argv[1])\nexcept ConvertError as e:\n    print('REFUSED', e)\n"
        "print('GROWTH_KB', peak() - base)\n"
    )
    good = tmp_path / "good.pt"
    done = subprocess.run(
        [sys.executable, "-c", code, str(bomb), str(good)], capture_output=True, text=True, timeout=300
    )
    assert "REFUSED" in done.stdout and "zip bomb" in done.stdout, done.stdout + done.stderr
    assert int(done.stdout.split("GROWTH_KB")[1]) < 64 * 1024  # nothing of the 256 MiB was inflated


def test_deeply_nested_safetensors_header_is_a_clear_error(tmp_path):
    from clipforge.checkpoint import FORMAT, CheckpointError, read_checkpoint_info

    header = b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    path = tmp_path / "deep.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(ConvertError, match="nested too deeply"):
        read_tensors(path)
    with pytest.raises(CheckpointError, match="nested too deeply"):
        read_checkpoint_info(path)
    # nesting hidden inside the metadata strings
    deep = "[" * 100_000 + "]" * 100_000
    meta = {"__metadata__": {"format": FORMAT, "config": deep, "tokenizer": deep}}
    raw = json.dumps(meta).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw)
    with pytest.raises((CheckpointError, ConfigError), match="nested too deeply"):
        read_checkpoint_info(path)
    raw = b'["not", "an object"]'
    path.write_bytes(len(raw).to_bytes(8, "little") + raw)
    with pytest.raises(CheckpointError, match="not a JSON object"):
        read_checkpoint_info(path)


def deep_torchscript(path, depth: int = 100_000):
    """A TorchScript-shaped archive whose data.pkl nests lists ``depth`` deep (issue 23, point 3):
    ``depth`` empty lists, then ``depth - 1`` APPENDs put each inside the one before it."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("m/data.pkl", b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b".")
        zf.writestr("m/constants.pkl", pickle.dumps((), protocol=2))
        zf.writestr("m/code/__torch__.py", "")
    return path


@pytest.mark.full_suite
def test_deeply_nested_torchscript_pickle_is_a_clear_error_on_convert_and_model(tmp_path, capsys):
    from hostile import one_line_error

    from clipforge.cli.main import main

    deep = deep_torchscript(tmp_path / "deep.pt")
    with pytest.raises(ConvertError, match=r"deep\.pt: not a model: its pickled objects nest more than 1000 levels"):
        read_tensors(deep)
    image = tmp_path / "x.png"
    image.write_bytes(b"")  # the model is loaded (and refused) before any image is read
    for argv in (["convert", str(deep), str(tmp_path / "out")],
                 ["classify", str(image), "--model", str(deep), "--labels", "a,b", "--no-progress"]):  # fmt: skip
        assert main(argv) == 1
        given = "(given as --model)" if argv[0] == "classify" else "(given as source)"  # what to change
        one_line_error(capsys.readouterr().err, f"clipforge {argv[0]}: error:", str(deep), "nest more than", given)
    assert not (tmp_path / "out").exists()
    shallow = deep_torchscript(tmp_path / "shallow.pt", depth=999)  # deep, but within the bound: no tensors
    with pytest.raises(ConvertError, match="holds no tensors"):
        read_tensors(shallow)


def _write_header(path, header: bytes):
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    return path


def test_a_safetensors_file_of_pure_metadata_says_it_holds_no_tensors(tmp_path, capsys):
    from hostile import one_line_error
    from search_fixtures import save_tiny_checkpoint

    from clipforge.checkpoint import CheckpointError, load_checkpoint, read_safetensors_header
    from clipforge.cli.main import main

    plain = _write_header(tmp_path / "meta.safetensors", json.dumps({"__metadata__": {"a": "b"}}).encode())
    with pytest.raises(ConvertError, match="without tensors .*only metadata"):
        read_tensors(plain)
    ours = read_safetensors_header(save_tiny_checkpoint(tmp_path / "tiny.safetensors"))
    meta = {"__metadata__": ours["__metadata__"]}  # a clipforge checkpoint's metadata, its tensors dropped
    bare = _write_header(tmp_path / "bare.safetensors", json.dumps(meta).encode())
    with pytest.raises(CheckpointError, match="without tensors"):
        load_checkpoint(bare)
    (tmp_path / "x.png").write_bytes(b"")
    for path in (plain, bare):
        argv = ["classify", str(tmp_path / "x.png"), "--model", str(path), "--labels", "a,b", "--no-progress"]
        assert main(argv) == 1
        one_line_error(capsys.readouterr().err, "clipforge classify: error:", str(path), "without tensors", "--model")
    assert main(["convert", str(plain), str(tmp_path / "out")]) == 1
    one_line_error(capsys.readouterr().err, "clipforge convert: error:", str(plain), "without tensors")


@pytest.mark.full_suite
def test_reading_a_safetensors_header_has_bounded_memory(tmp_path):
    """A header of many small values cost ~12x its size as Python objects (issue 23, point 6). Now
    values are counted first (at most ``MAX_JSON_VALUES``) and a header of one huge string costs
    about twice its size. Peak RSS is measured in a fresh process: the many-values header first."""
    import subprocess
    import sys

    size = 16_000_000
    entry = b'"t%d":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
    entries = b"".join(entry % i for i in range(size // len(entry % 0)))
    many = _write_header(tmp_path / "many.safetensors", b"{" + entries + b'"__metadata__":{}}')
    one = _write_header(tmp_path / "one.safetensors", json.dumps({"__metadata__": {"x": "a" * size}}).encode())
    code = (
        "import resource, sys\n"
        "from clipforge.checkpoint import CheckpointError, read_safetensors_header\n"
        "peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "base = peak()\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n        read_safetensors_header(path)\n        print('READ')\n"
        "    except CheckpointError as e:\n        print('REFUSED', e)\n"
        "    print('GROWTH_KB', peak() - base)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(many), str(one)], capture_output=True, text=True, timeout=300
    )
    out = done.stdout.split("GROWTH_KB")
    assert len(out) == 3, done.stdout + done.stderr
    assert out[0].startswith("REFUSED") and "more than a checkpoint's (500,000)" in out[0], out[0]
    assert out[1].split()[1] == "READ", out[1]
    many_growth, one_growth = (int(part.split()[0]) * 1024 for part in out[1:])
    assert many_growth < 1.2 * size + (16 << 20), many_growth  # the bytes read, nothing built from them
    assert one_growth < 2.2 * size + (16 << 20), one_growth  # text + the one string parsed from it
