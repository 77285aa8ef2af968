"""Read the tensors of a TorchScript archive (OpenAI's released ``.pt`` files) without running its code.

A TorchScript archive is a zip: ``<name>/data.pkl`` pickles the module tree, ``<name>/data/<key>``
holds the raw bytes of each tensor storage and ``<name>/code/`` holds the TorchScript source.
``torch.jit.load`` compiles and runs that source; ``torch.load(weights_only=True)`` refuses such
archives. Here ``data.pkl`` is read with an unpickler that can build only tensors, plain containers
and inert stand-ins for the script modules: any other global in the pickle (the way a malicious
pickle runs code) is an error, and nothing is imported or executed.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

StateDict = dict[str, torch.Tensor]

# Typed-storage class names in the pickle -> the dtype of their bytes.
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class ArchiveError(ValueError):
    """A TorchScript archive that cannot be read safely."""


def is_torchscript_archive(path: str | Path) -> bool:
    """True for a zip holding ``<name>/data.pkl`` and TorchScript code (``code/`` or ``constants.pkl``)."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return _prefix(names) is not None and any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def read_torchscript_tensors(path: str | Path) -> StateDict:
    """Every tensor attribute of the archived module tree, by dotted name (``visual.conv1.weight``).

    Besides parameters and buffers this includes tensor attributes the code used as constants
    (OpenAI's ``attn_mask``, ``input_resolution``, ...); callers drop the ones they know.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            prefix = _prefix(zf.namelist())
            if prefix is None:
                raise ArchiveError(f"{path}: a zip file but not a TorchScript archive (no */data.pkl)")
            order = _read(zf, prefix + "byteorder", path, required=False)
            if order is not None and order.strip() not in (b"little", b""):
                raise ArchiveError(f"{path}: big-endian archives are not supported")
            data = _read(zf, prefix + "data.pkl", path)
            root = _RestrictedUnpickler(io.BytesIO(data), zf=zf, prefix=prefix, path=path).load()
    except zipfile.BadZipFile as e:
        raise ArchiveError(f"{path}: corrupt or truncated zip archive ({e})") from e
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise ArchiveError(f"{path}: cannot read the TorchScript archive safely: {e}") from e
    tensors: StateDict = {}
    _collect(root, tensors, path=path)
    if not tensors:
        raise ArchiveError(f"{path}: the TorchScript archive holds no tensors")
    return tensors


def _prefix(names: list[str]) -> str | None:
    """The archive's top folder (``archive/``, ``ViT-B-32/``, ...), found by its ``data.pkl``."""
    for n in names:
        parts = n.split("/")
        if len(parts) == 2 and parts[1] == "data.pkl":
            return parts[0] + "/"
    return None


def _read(zf: zipfile.ZipFile, name: str, path: Path, *, required: bool = True) -> bytes | None:
    try:
        return zf.read(name)
    except KeyError:
        if required:
            raise ArchiveError(f"{path}: archive entry {name!r} is missing") from None
        return None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:  # truncated member, bad CRC
        raise ArchiveError(f"{path}: archive entry {name!r} is corrupt or truncated ({e})") from e


class _ScriptObject:
    """Inert stand-in for a pickled TorchScript object: it only records the attributes it is given."""

    qualname = "?"

    def __init__(self, *args: Any) -> None:
        self.attrs: Any = {}

    def __setstate__(self, state: Any) -> None:
        self.attrs = state


def _stand_in(qualname: str) -> type:
    return type("ScriptObject", (_ScriptObject,), {"qualname": qualname})


def _passthrough(value: Any, *_: Any) -> Any:
    return value


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds tensors from the archive's storages; refuses every global it does not know."""

    def __init__(self, file: io.BytesIO, *, zf: zipfile.ZipFile, prefix: str, path: Path) -> None:
        super().__init__(file)
        self.zf, self.prefix, self.path = zf, prefix, path
        self.storages: dict[str, torch.Tensor] = {}
        self.stand_ins: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            qualname = f"{module}.{name}"
            return self.stand_ins.setdefault(qualname, _stand_in(qualname))
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return self._rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _passthrough
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if module == "torch.jit._pickle" and name.startswith(("build_", "restore_type_tag")):
            return _passthrough  # typed-list and type-tag markers: the value itself is the payload
        raise pickle.UnpicklingError(
            f"refusing to load global '{module}.{name}' (only tensors and module attributes are read; "
            "a pickle naming other globals could run code)"
        )

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        _, dtype, key, _location, numel = pid
        if not isinstance(dtype, torch.dtype) or not isinstance(numel, int):
            raise pickle.UnpicklingError(f"malformed storage reference {pid!r}")
        key = str(key)
        if key not in self.storages:
            raw = _read(self.zf, f"{self.prefix}data/{key}", self.path)
            itemsize = torch.empty((), dtype=dtype).element_size()
            if len(raw) < numel * itemsize:
                raise ArchiveError(
                    f"{self.path}: storage {key} holds {len(raw)} bytes, "
                    f"expected {numel * itemsize} (truncated?)"
                )
            size = numel * itemsize
            buf = bytearray(raw) if len(raw) == size else bytearray(memoryview(raw)[:size])
            self.storages[key] = (
                torch.frombuffer(buf, dtype=dtype) if numel else torch.empty(0, dtype=dtype)
            )  # (numel,)
        return self.storages[key]

    def _rebuild_tensor(self, storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> torch.Tensor:
        if not isinstance(storage, torch.Tensor):
            raise pickle.UnpicklingError("tensor without a storage")
        size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
        if len(size) != len(stride) or any(s < 0 for s in size + stride) or offset < 0:
            raise ArchiveError(f"{self.path}: malformed tensor layout size={size} stride={stride}")
        if all(size):  # a non-empty tensor must lie inside its storage
            last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
            if last >= storage.numel():
                raise ArchiveError(f"{self.path}: tensor reaches past its storage (corrupt archive)")
        view = storage.as_strided(size, stride, offset)
        whole = offset == 0 and view.numel() == storage.numel() and view.is_contiguous()
        return view if whole else view.clone()  # a clone does not pin a larger shared storage


# Deepest module tree read (a CLIP archive's is about 10 levels); deeper nesting is no model.
MAX_DEPTH = 1000


def _collect(root: Any, out: StateDict, *, path: Path) -> None:
    """Depth-first walk over script objects, dicts and lists, recording tensors by dotted name (the
    first name a shared tensor is met under). Iterative, so nesting cannot exhaust Python's stack;
    nesting deeper than ``MAX_DEPTH`` is an :class:`ArchiveError`."""
    seen: set[int] = set()
    stack: list[tuple[Any, str, int]] = [(root, "", 0)]
    while stack:
        obj, name, depth = stack.pop()
        if isinstance(obj, torch.Tensor):
            out.setdefault(name, obj)
            continue
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, _ScriptObject):
            obj = obj.attrs
        if isinstance(obj, dict):
            items = [(str(k), v) for k, v in obj.items()]
        elif isinstance(obj, (list, tuple)):
            items = [(str(i), v) for i, v in enumerate(obj)]
        else:
            continue
        if items and depth >= MAX_DEPTH:
            raise ArchiveError(f"{path}: not a model: its pickled objects nest more than {MAX_DEPTH} levels deep")
        stack += [(value, f"{name}.{key}" if name else key, depth + 1) for key, value in reversed(items)]
