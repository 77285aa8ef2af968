"""Semantic image search: an incremental embedding store (SQLite) with exact or faiss ANN search.

``index_folder(root, IndexStore(db, create=True), Encoder.load(model))`` indexes a
folder; ``ImageIndex.open(db, encoder=...).search(text="a dog on a beach")`` queries it.
"""

from ..inference import Encoder
from .ann import open_vector_index
from .indexer import IndexReport, index_folder
from .neighbours import ExactIndex, IvfIndex
from .search import ImageIndex, SearchHit
from .store import Fingerprint, IndexDatabaseError, IndexStore, ModelMismatchError

__all__ = [
    "Encoder",
    "ExactIndex",
    "Fingerprint",
    "ImageIndex",
    "IndexDatabaseError",
    "IndexReport",
    "IndexStore",
    "IvfIndex",
    "ModelMismatchError",
    "SearchHit",
    "index_folder",
    "open_vector_index",
]
