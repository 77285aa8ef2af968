"""Image-text data: pair datasets (CSV/TSV, JSONL, image folders, WebDataset tar shards), the
built-in procedural shapes data, a pre-decoded memmap cache, skip accounting and collation."""

from clipforge.data.build import SHAPES_SOURCE, build_dataset, describe_source, shapes_split
from clipforge.data.cache import CachedPairs, build_cache
from clipforge.data.captions import clean_captions, pick_caption
from clipforge.data.collate import Batch, Collator, prepare_images
from clipforge.data.pairs import PairsDataset, read_csv, read_folder, read_jsonl
from clipforge.data.shapes import ShapesDataset, ShapesSpec, export_shapes, make_shapes_sample
from clipforge.data.shapes_tasks import ZeroShotTask, zero_shot_tasks
from clipforge.data.shard_io import expand_braces
from clipforge.data.skips import Skip, SkipStats
from clipforge.data.webdataset import TarShards

__all__ = [
    "SHAPES_SOURCE",
    "Batch",
    "CachedPairs",
    "Collator",
    "PairsDataset",
    "ShapesDataset",
    "ShapesSpec",
    "Skip",
    "SkipStats",
    "TarShards",
    "ZeroShotTask",
    "build_cache",
    "build_dataset",
    "clean_captions",
    "describe_source",
    "expand_braces",
    "export_shapes",
    "make_shapes_sample",
    "pick_caption",
    "prepare_images",
    "read_csv",
    "read_folder",
    "read_jsonl",
    "shapes_split",
    "zero_shot_tasks",
]
