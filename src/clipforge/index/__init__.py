"""Semantic image search: an incremental embedding store (SQLite with exact or faiss ANN search,
or a Qdrant collection that searches itself).

``index_folder(root, IndexStore(db, create=True), Encoder.load(model))`` indexes a
folder; ``ImageIndex.open(db, encoder=...).search(text="a dog on a beach")`` queries it.
``open_store("qdrant://HOST:6333/photos", create=True)`` (or ``"qdrant+local:FOLDER"``) opens a
Qdrant store in place of ``IndexStore``; every other call is the same.
"""

from ..inference import Encoder
from .ann import open_vector_index
from .indexer import IndexReport, index_folder
from .neighbours import ExactIndex, IvfIndex
from .protocol import Store
from .qdrant import QdrantStore, QdrantStoreError
from .search import ImageIndex, SearchHit
from .store import Fingerprint, IndexDatabaseError, IndexStore, ModelMismatchError
from .stores import open_store

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
    "QdrantStore",
    "QdrantStoreError",
    "SearchHit",
    "Store",
    "index_folder",
    "open_store",
    "open_vector_index",
]
