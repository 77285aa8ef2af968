"""Interop with OpenAI CLIP, open_clip and Hugging Face checkpoints, and export to HF, open_clip and ONNX.

One module per format holds pure config/state-dict mappings (:mod:`.openai`, :mod:`.open_clip`,
:mod:`.hf`); :mod:`.io` and :mod:`.torchscript` read files without executing anything in them;
:mod:`.detect` tells formats apart; :mod:`.sources` imports and converts; :mod:`.export` and
:mod:`.onnx` write other formats.
"""

from .detect import detect, find_clipforge_checkpoint
from .export import export, export_hf, export_open_clip
from .io import ConvertError, read_tensors
from .sources import convert, import_model, import_tokenizer, load_source

__all__ = [
    "ConvertError",
    "convert",
    "detect",
    "export",
    "export_hf",
    "export_open_clip",
    "find_clipforge_checkpoint",
    "import_model",
    "import_tokenizer",
    "load_source",
    "read_tensors",
]
