"""Which model and folder a store belongs to: the checks every embedding store shares.

A store is bound once to a model (its id, name and weights' path), an embedding size and dtype, a
folder root, and the precision and backend the images were encoded with. :class:`ModelBinding`
implements binding and checking on top of three things a store provides: ``get_meta(key)``, a
``path`` to name it by, and ``_rebind(values, *, clear_rows, drop_keys)`` (write those meta values,
and drop every row first when re-binding). The SQLite store (:mod:`clipforge.index.store`) and the
Qdrant store (:mod:`clipforge.index.qdrant`) both inherit it, so both refuse the same mismatches
with the same messages. It is a protocol with default implementations, so that
:class:`~clipforge.index.protocol.Store` extends it rather than declaring the binding again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypedDict

if TYPE_CHECKING:
    from ..inference import Encoder

DTYPES = ("float32", "float16")
log = logging.getLogger(__name__)


def describe_model(model_id: str | None, name: str | None = "", path: str | None = "") -> str:
    """A model as a person can tell it apart: file (every run's weights are ``model.safetensors``,
    so the full path), name, and the weights' id."""
    parts = [p for p in (path, name if name and not (path and path.endswith(name)) else "") if p]
    return f"{' / '.join(parts) or 'an unnamed model'} [id {model_id}]"


class EncoderBinding(TypedDict):
    """What a store (:meth:`ModelBinding.bind`'s keywords) or an embedding shard records of the encoder
    that filled it: the model, the path that finds it again (so that search loads the same weights), and
    the precision and backend it encoded with (so that queries are encoded the same way)."""

    model_id: str
    model_name: str
    model_path: str
    precision: str
    backend: str
    embed_dim: int


def encoder_binding(encoder: Encoder) -> EncoderBinding:
    """The :class:`EncoderBinding` of ``encoder``."""
    return {
        "model_id": encoder.model_id,
        "model_name": encoder.model_name,
        "model_path": encoder.reference,
        "precision": encoder.precision,
        "backend": encoder.backend,
        "embed_dim": encoder.embed_dim,
    }


class IndexDatabaseError(ValueError):
    """A store that cannot be used as asked (wrong model, wrong folder, not an index, unreachable)."""


class ModelMismatchError(IndexDatabaseError):
    """The index was built with another model than the one asked to use it."""


class ModelBinding(Protocol):
    """Model and folder binding over a store's meta values (see the module docstring)."""

    path: object  # what error messages name the store by (a file path, a URL)

    def get_meta(self, key: str) -> str | None:
        raise NotImplementedError

    def _rebind(self, values: dict[str, str], *, clear_rows: bool, drop_keys: tuple[str, ...]) -> None:
        """Write ``values`` (and remove ``drop_keys``) in the meta, after dropping every row and
        skip record if ``clear_rows``."""
        raise NotImplementedError

    @property
    def model_id(self) -> str | None:
        return self.get_meta("model_id")

    @property
    def embed_dim(self) -> int | None:
        value = self.get_meta("embed_dim")
        return None if value is None else int(value)

    @property
    def dtype(self) -> str:
        return self.get_meta("dtype") or "float32"

    @property
    def root(self) -> Path | None:
        value = self.get_meta("root")
        return None if value is None else Path(value)

    def bind(
        self,
        *,
        model_id: str,
        embed_dim: int,
        root: str | Path,
        dtype: str = "float32",
        model_name: str = "",
        model_path: str = "",
        precision: str = "",
        backend: str = "",
        rebuild: bool = False,
    ) -> None:
        """Tie an empty store to a model and folder, or check that it already is.

        A store built with another model (or for another folder) raises unless ``rebuild``, which
        drops every row and re-binds. ``precision`` and ``backend`` (how the images are encoded) are
        recorded, so that queries are encoded the same way; adding to an index in another one is
        allowed, and logged.
        """
        if dtype not in DTYPES:
            raise ValueError(f"embedding dtype must be one of {DTYPES}, got {dtype!r}")
        root = str(Path(root).resolve())
        current = {k: self.get_meta(k) for k in ("model_id", "root")}
        if current["model_id"] is not None and not rebuild:
            if current["model_id"] != model_id:
                raise ModelMismatchError(
                    f"{self.path} was built with model {self._stored_model()}, not with model "
                    f"{describe_model(model_id, model_name, model_path)}; "
                    "use the same model, or `rebuild=True` to re-embed everything"
                )
            if current["root"] != root:
                raise IndexDatabaseError(
                    f"{self.path} indexes folder {current['root']}, not {root}; "
                    "use another index database, or `rebuild=True`"
                )
            if model_path and model_path != self.get_meta("model_path"):  # same weights, moved
                self._rebind({"model_path": model_path}, clear_rows=False, drop_keys=())
            built = self.encoding()
            given = (precision or built[0], backend or built[1])
            if None not in built and given != built:
                log.warning(
                    "%s: images were encoded at precision %s with backend %s; adding new ones at %s with %s",
                    self.path, *built, *given,
                )  # fmt: skip
            return
        values = {
            "model_id": model_id,
            "embed_dim": str(embed_dim),
            "root": root,
            "dtype": dtype,
            "model_name": model_name,
            "model_path": model_path,
        }
        drop: tuple[str, ...] = ()
        if precision and backend:
            values |= {"precision": precision, "backend": backend}
        else:  # unknown (embedding shards of an older clipforge): queries fall back to the defaults
            drop = ("precision", "backend")
        self._rebind(values, clear_rows=rebuild, drop_keys=drop)

    def encoding(self) -> tuple[str | None, str | None]:
        """(precision, backend) the images were encoded with; ``None`` where the index does not say
        (built by an older clipforge)."""
        return self.get_meta("precision"), self.get_meta("backend")

    def _stored_model(self) -> str:
        return describe_model(self.get_meta("model_id"), self.get_meta("model_name"), self.get_meta("model_path"))

    def check_model(self, model_id: str, *, model_name: str = "", model_path: str = "") -> None:
        """Raise :class:`ModelMismatchError` (naming both models) unless the index was built with
        ``model_id``."""
        stored = self.model_id
        if stored is None:
            raise IndexDatabaseError(f"{self.path} is empty: no model has been bound to it yet")
        if stored != model_id:
            raise ModelMismatchError(
                f"{self.path} was built with model {self._stored_model()}, but the query model is "
                f"{describe_model(model_id, model_name, model_path)}; search with the model that built "
                "the index, or re-index with `clipforge index FOLDER --model CKPT --rebuild`"
            )
