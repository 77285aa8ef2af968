"""Semantic image search: an incremental embedding store (SQLite) with exact or faiss ANN search.

``index_folder(root, IndexStore(db, create=True), Encoder.from_checkpoint(ckpt))`` indexes a
folder; ``ImageIndex.open(db, encoder=...).search(text="a dog on a beach")`` queries it.
"""

from .ann import ExactIndex, IvfIndex, open_vector_index
from .embed import IndexReport, index_folder
from .encoder import Encoder, checkpoint_model_id, state_dict_model_id
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
    "checkpoint_model_id",
    "index_folder",
    "open_vector_index",
    "state_dict_model_id",
]
