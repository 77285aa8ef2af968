"""Model families against their reference implementations: image and text encoding throughput, same weights.

Every family of issue 22 is built by clipforge at its published architecture (random weights,
biases and norm weights perturbed, random BatchNorm statistics) and handed to its reference through
clipforge's own exporter, so both run **the same weights**:

    family        clipforge architecture       reference (what loads clipforge's export)
    eva02         EVA02-B-16                   open_clip + timm ``eva02_base_patch16_clip_224``
    pe-core       PE-Core-B-16                 open_clip + timm ``vit_pe_core_base_patch16_224``
    mobileclip-b  MobileCLIP-B                 open_clip + timm ``vit_base_mci_224``
    mobileclip-s  MobileCLIP-S2                open_clip + timm ``fastvit_mci2``, as loaded and
                                               after ``timm.utils.reparameterize_model``; clipforge
                                               with the train-time branches and folded
    mobileclip-s0 MobileCLIP-S0                Apple's ``mobileclip`` package (ml-mobileclip; not on
                                               PyPI: ``--apple-mobileclip PATH``) loading clipforge's
                                               weights in Apple's names, as built and after its
                                               ``reparameterize_model`` (both towers fold)
    xlm-roberta   xlm-roberta-base-ViT-B-32    open_clip ``HFTextEncoder`` (transformers XLM-R)
    nllb-clip     nllb-clip-base               open_clip ``HFTextEncoder`` (transformers M2M100 encoder)
    metaclip2     ViT-H-14-worldwide, shrunk   transformers ``MetaClip2Model`` (from ``export_hf``)
                  to ViT-B-32's towers
                  (``--metaclip2-size published``: at its published size, the peer sharing
                  clipforge's tensors)

MetaCLIP 2's published ViT-H-14 (1.86 B parameters with its 901,629-row vocabulary, 7.4 GB in fp32)
would need ~15 GB as two copies: by default it runs with ViT-B-32-sized towers and a 32,000-row
vocabulary (a lookup table: its size changes memory, not speed). ``--metaclip2-size published``
runs the published architecture (with QuickGELU, as the published weights) in one copy: clipforge's
model is built on the meta device and filled tensor by tensor from a seeded generator (no default
init of 1.86 B values), and transformers' ``MetaClip2Model``, also built on the meta device, takes
the tensors of clipforge's ``state_dict_to`` (what ``export_hf`` writes) with
``load_state_dict(assign=True)``: renamed tensors and the q/k/v rows split from clipforge's fused
matrices are views of clipforge's storage, only the two transposed projections (2.4 M values) are
copies. Measured: peak RSS 7.9 GiB instead of ~15 GB, 8 minutes on this shared 2-core machine (1 min
of it building), so it is not the default.

The run first checks that the peers produce the same normalised embeddings (max |diff| printed
per row), so the timings compare the same computation. Texts are full-context rows of caption
length (10..22 tokens), padded with the family's padding id, in the family's token layout (CLIP's
start/end ids, XLM-R's ``<s> ... </s>``, NLLB's language code first).

Both peers run in ONE process of the reference environment (open_clip and timm need torchvision,
which loads only beside its own torch), with clipforge from the source tree:

    PYTHONPATH=src /work/venv-ref/bin/python benchmarks/bench_families.py --family all
    PYTHONPATH=src /work/venv-ref/bin/python benchmarks/bench_families.py --family mobileclip-s --repeats 6
    PYTHONPATH=src /work/venv-ref/bin/python benchmarks/bench_families.py --family metaclip2 --metaclip2-size published
    git clone https://github.com/apple/ml-mobileclip /tmp/ref-mobileclip
    PYTHONPATH=src /work/venv-ref/bin/python benchmarks/bench_families.py --family mobileclip-s0 \
        --apple-mobileclip /tmp/ref-mobileclip

One torch thread by default (the machine's 2 cores are shared with long trainings; one thread gives
stable ratios). A family's encoders are all built first and each round times all of them in turn,
so drifts of the machine's speed hit every peer alike; families run one after another, each freed
before the next. Prints a markdown table (items/s, median over rounds) and the ratios, then the
process's peak RSS.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.util
import json
import math
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from clipforge.convert import apple_mobileclip, export_hf, export_open_clip, hf
from clipforge.convert.open_clip_hf_text import hf_text_config
from clipforge.models import CLIP, create_model, get_model_config

Encode = Callable[[torch.Tensor], torch.Tensor]
Encoders = dict[str, Encode]  # mode ("image", "image, folded", "text", ...) -> normalised embeddings
PeerBuilder = Callable[[CLIP, Path], Encoders]
CLIPFORGE = "clipforge"
MAX_DIFF = 1e-4  # above this the peers do not compute the same thing and the timings mean nothing


# -- the reference peers, each loading clipforge's export of the model -----------------------------
def _open_clip_encoders(ref: Any) -> Encoders:
    ref.eval()
    return {
        "image": lambda x: ref.encode_image(x, normalize=True),
        "text": lambda t: ref.encode_text(t, normalize=True),
    }


def open_clip_peer(model: CLIP, folder: Path) -> Encoders:
    """open_clip (+ timm for its timm towers) loading clipforge's open_clip export (``local-dir:``)."""
    import open_clip

    return _open_clip_encoders(open_clip.create_model(f"local-dir:{export_open_clip(model, folder / 'oc')}"))


def open_clip_folding_peer(model: CLIP, folder: Path) -> Encoders:
    """:func:`open_clip_peer` for a MobileCLIP S model, timed as loaded (train-time branches) and
    after timm's ``reparameterize_model`` (a folded copy)."""
    import open_clip
    from timm.utils.model import reparameterize_model

    ref = open_clip.create_model(f"local-dir:{export_open_clip(model, folder / 'oc')}").eval()
    folded = _open_clip_encoders(reparameterize_model(ref))
    return {"image, branches": _open_clip_encoders(ref)["image"], "image, folded": folded["image"],
            "text": folded["text"]}  # fmt: skip


def apple_peer(model: CLIP, folder: Path) -> Encoders:
    """Apple's ``mobileclip.clip.CLIP`` (from ``--apple-mobileclip``) for the model's published config
    (``mobileclip/configs/<name>.json``), loading clipforge's weights in Apple's names
    (:func:`clipforge.convert.apple_mobileclip.state_dict_to`), timed as built (train-time branches)
    and after Apple's ``reparameterize_model`` (a folded copy: image and text towers)."""
    try:
        import mobileclip
        from mobileclip.clip import CLIP as AppleCLIP
        from mobileclip.modules.common.mobileone import reparameterize_model
    except ImportError as e:
        raise SystemExit(f"Apple's mobileclip package is not importable ({e}): pass --apple-mobileclip PATH") from e
    name = model.config.name.lower().replace("-", "_")  # MobileCLIP-S0 -> mobileclip_s0
    apple_cfg = json.loads((Path(mobileclip.__file__).parent / "configs" / f"{name}.json").read_text())
    with torch.no_grad():  # Apple's MCi head has no bias; clipforge's encoders are built after this, from `model`
        model.visual.proj.bias.zero_()
    ref = AppleCLIP(apple_cfg).eval()
    ref.load_state_dict(apple_mobileclip.state_dict_to(model.state_dict()))
    folded = reparameterize_model(ref)

    def encoders(m: Any) -> Encoders:
        return {"image": lambda x: m.encode_image(x, normalize=True),
                "text": lambda t: m.encode_text(t, normalize=True)}  # fmt: skip

    b, f = encoders(ref), encoders(folded)
    return {"image, branches": b["image"], "image, folded": f["image"],
            "text, branches": b["text"], "text, folded": f["text"]}  # fmt: skip


def open_clip_hf_text_peer(model: CLIP, folder: Path) -> Encoders:
    """open_clip with a transformers text tower (``HFTextEncoder``): clipforge's open_clip export names
    the Hub's text model, whose ``config.json`` (clipforge's copy of its fields) is laid out locally
    and named instead, as open_clip accepts for ``hf_model_name`` (no network)."""
    import open_clip

    out = export_open_clip(model, folder / "oc")
    data = json.loads((out / "open_clip_config.json").read_text())
    text_cfg = data["model_cfg"]["text_cfg"]
    hf_folder = folder / "hf_text"
    hf_folder.mkdir()
    hf = hf_text_config(text_cfg["hf_model_name"])
    if hf["model_type"] == "m2m_100":  # built whole before open_clip keeps its encoder: one decoder layer will do
        hf["decoder_layers"] = 1
    (hf_folder / "config.json").write_text(json.dumps(hf))
    text_cfg["hf_model_name"] = text_cfg["hf_tokenizer_name"] = str(hf_folder)
    (out / "open_clip_config.json").write_text(json.dumps(data))
    return _open_clip_encoders(open_clip.create_model(f"local-dir:{out}", pretrained_text=False))


def transformers_peer(model: CLIP, folder: Path) -> Encoders:
    """transformers (``CLIPModel`` / ``MetaClip2Model`` by the folder's ``model_type``) loading
    clipforge's ``export_hf`` folder."""
    from transformers import AutoModel

    return transformers_encoders(AutoModel.from_pretrained(export_hf(model, folder / "hf")).eval())


def transformers_encoders(ref: Any) -> Encoders:
    def features(out: Any) -> torch.Tensor:  # transformers 5 returns a model output, 4.x a tensor
        return F.normalize(out if isinstance(out, torch.Tensor) else out.pooler_output, dim=-1)

    return {"image": lambda x: features(ref.get_image_features(pixel_values=x)),
            "text": lambda t: features(ref.get_text_features(input_ids=t))}  # fmt: skip


def transformers_shared_peer(model: CLIP, folder: Path) -> Encoders:
    """:func:`transformers_peer` without the second copy: ``MetaClip2Model`` / ``CLIPModel`` built on the
    meta device from clipforge's ``config_to`` takes the tensors of its ``state_dict_to`` (what
    ``export_hf`` writes to ``model.safetensors``) by assignment, so it computes with clipforge's own
    storage (q/k/v as row views of the fused matrices; the transposed projections are copies)."""
    from transformers import AutoConfig, AutoModel

    config = hf.config_to(model.config)
    with torch.device("meta"):
        ref = AutoModel.from_config(AutoConfig.for_model(**config))
    ref.load_state_dict(hf.state_dict_to(model.state_dict()), strict=True, assign=True)
    for name, buffer in list(ref.named_buffers()):  # non-persistent, so not in a state dict: still on meta
        if not name.endswith("position_ids"):
            raise RuntimeError(f"{name}: a buffer with no value after the assignment")
        owner, leaf = ref.get_submodule(name.rsplit(".", 1)[0]), name.rsplit(".", 1)[1]
        owner.register_buffer(leaf, torch.arange(buffer.shape[-1]).expand(buffer.shape), persistent=False)
    shared = {t.untyped_storage().data_ptr() for t in model.state_dict().values()}
    copied = sum(p.numel() for p in ref.parameters() if p.untyped_storage().data_ptr() not in shared)
    print(f"(reference shares clipforge's storage but for {copied:,} of {sum(p.numel() for p in ref.parameters()):,} "
          "values)", flush=True)  # fmt: skip
    return transformers_encoders(ref.eval())


# -- the families ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Family:
    """One family: the clipforge architecture, its reference and how to feed it."""

    arch: str  # a clipforge architecture (src/clipforge/model_configs)
    reference: str  # the peer, as the table names it
    peer: PeerBuilder
    tokens: str  # a key of TOKEN_LAYOUTS
    shrink: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # tower -> changed fields
    note: str = ""  # how the architecture differs from the published one
    act: str | None = None  # the activation, where the published weights' differs from the architecture's
    materialise: bool = False  # built on the meta device and filled by fill_random (a large model)


# ViT-B-32's towers (vision 768 x 12 at 32 px patches, text 512 x 12), for a family too large here.
_B32 = {"vision": {"width": 768, "layers": 12, "head_width": 64, "patch_size": 32},
        "text": {"width": 512, "layers": 12, "head_width": 64, "vocab_size": 32000}}  # fmt: skip
FAMILIES: dict[str, Family] = {
    "eva02": Family("EVA02-B-16", "open_clip + timm", open_clip_peer, "clip"),
    "pe-core": Family("PE-Core-B-16", "open_clip + timm", open_clip_peer, "clip"),
    "mobileclip-b": Family("MobileCLIP-B", "open_clip + timm", open_clip_peer, "clip"),
    "mobileclip-s": Family("MobileCLIP-S2", "open_clip + timm", open_clip_folding_peer, "clip"),
    "mobileclip-s0": Family("MobileCLIP-S0", "Apple mobileclip", apple_peer, "clip"),
    "xlm-roberta": Family("xlm-roberta-base-ViT-B-32", "open_clip + transformers XLM-R", open_clip_hf_text_peer,
                          "xlmr"),
    "nllb-clip": Family("nllb-clip-base", "open_clip + transformers M2M100", open_clip_hf_text_peer, "nllb"),
    "metaclip2": Family("ViT-H-14-worldwide", "transformers MetaClip2Model", transformers_peer, "xlmr", _B32,
                        "ViT-B-32-sized towers, 32k vocabulary"),
}  # fmt: skip
# --metaclip2-size published: the published ViT-H-14 (QuickGELU, as facebook/metaclip-2-worldwide-huge-quickgelu)
METACLIP2_PUBLISHED = Family("ViT-H-14-worldwide", "transformers MetaClip2Model", transformers_shared_peer, "xlmr",
                             note="published size, QuickGELU", act="quick_gelu", materialise=True)  # fmt: skip

# layout -> (first token, end token, padding id, lowest random id); negative ids count from the
# vocabulary's end. CLIP: start and end are the two largest ids, zero padding. XLM-R (and MetaCLIP 2,
# which reads its text at the first end token): <s> = 0, </s> = 2, <pad> = 1. NLLB: a language code
# (the last ids), </s> = 2, <pad> = 1.
TOKEN_LAYOUTS: dict[str, tuple[int, int, int, int]] = {
    "clip": (-2, -1, 0, 1),
    "xlmr": (0, 2, 1, 4),
    "nllb": (-1, 2, 1, 4),
}


def caption_tokens(batch: int, context: int, vocab: int, layout: str) -> torch.Tensor:
    """Rows like tokenised captions: a first token, 8..20 random ids, an end token, padding. (B, T)"""
    first, end, pad, low = TOKEN_LAYOUTS[layout]
    first, end = first % vocab, end % vocab
    tokens = torch.full((batch, context), pad, dtype=torch.long)
    for i in range(batch):
        n = int(torch.randint(10, 23, ()))
        tokens[i, 0], tokens[i, n - 1] = first, end
        tokens[i, 1 : n - 1] = torch.randint(low, vocab - 2, (n - 2,))
    return tokens


def perturb(model: torch.nn.Module) -> None:
    """Every bias and norm weight off its initial value, random BatchNorm statistics: what a converter
    drops or misplaces then shows in the embeddings (matrices are random already). Attention's fused
    q/k/v biases stay as initialised (zero): EVA-02's format has no key bias, which under RoPE is not
    a no-op, so a random one would not survive the export."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and not name.endswith("qkv.bias"):
                p.add_(0.02 * torch.randn_like(p))
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 2.0)


def fill_random(model: CLIP) -> None:
    """Values for a model built on the meta device, one pass per tensor from the global (seeded)
    generator: matrices and embeddings N(0, 0.02), the class token too, norm weights one, biases zero
    (``perturb`` then moves them), the logit scale log(1 / 0.07). A ViT with no buffers only."""
    if any(True for _ in model.buffers()):
        raise ValueError("fill_random fills parameters only; this model has buffers")
    model.to_empty(device="cpu")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2 or name.endswith("cls_token"):
                p.normal_(0.0, 0.02)
            elif name == "logit_scale":
                p.fill_(math.log(1 / 0.07))
            else:
                p.fill_(1.0 if "norm" in name.rsplit(".", 2)[-2] and name.endswith("weight") else 0.0)


def build(family: Family) -> CLIP:
    """The family's clipforge model, random, in eval mode (with train-time branches for MobileCLIP S)."""
    cfg = get_model_config(family.arch)
    if family.shrink:
        towers = {name: dataclasses.replace(getattr(cfg, name), **fields) for name, fields in family.shrink.items()}
        cfg = cfg.replace(**towers)
    if family.act:
        cfg = cfg.replace(act=family.act)
    if family.materialise:
        with torch.device("meta"):
            model = create_model(cfg).eval()
        fill_random(model)
    else:
        model = create_model(cfg).eval()
    perturb(model)
    return model


def clipforge_encoders(model: CLIP, modes: list[str]) -> Encoders:
    """clipforge's encoders for the reference's modes; ``..., folded`` (and plain ``text``) on a folded copy."""
    folded = model
    if any(mode.endswith("folded") for mode in modes):
        folded = create_model(model.config).eval()
        folded.load_state_dict(model.state_dict())
        folded.reparameterize()
    table = {"image": model.encode_image, "image, branches": model.encode_image,
             "image, folded": folded.encode_image, "text": folded.encode_text,
             "text, branches": model.encode_text, "text, folded": folded.encode_text}  # fmt: skip
    return {mode: table[mode] for mode in modes}


# -- timing ----------------------------------------------------------------------------------------
def interleaved_rates(
    peers: dict[str, Encoders], inputs: dict[str, torch.Tensor], repeats: int
) -> tuple[dict[tuple[str, str], torch.Tensor], dict[tuple[str, str], float]]:
    """Outputs (the warm-up call's) and items/s (median over ``repeats`` rounds, each timing every
    (peer, mode) in turn) of every peer's encoder of every mode."""
    keys = [(peer, mode) for peer in peers for mode in inputs]
    rounds: dict[tuple[str, str], list[float]] = {key: [] for key in keys}
    with torch.inference_mode():
        out = {(peer, mode): peers[peer][mode](inputs[mode]) for peer, mode in keys}
        for _ in range(repeats):
            for peer, mode in keys:
                start = time.perf_counter()
                peers[peer][mode](inputs[mode])
                rounds[peer, mode].append(inputs[mode].shape[0] / (time.perf_counter() - start))
    return out, {key: statistics.median(v) for key, v in rounds.items()}


def measure(name: str, family: Family, args: argparse.Namespace) -> tuple[list[str], float]:
    """The family's table rows (per mode: clipforge's and the reference's rates, their ratio, the
    largest embedding difference) and the largest difference of all."""
    torch.manual_seed(0)
    start = time.perf_counter()
    model = build(family)
    cfg = model.config
    with tempfile.TemporaryDirectory() as tmp:  # the reference may map its weights from the export
        ref = family.peer(model, Path(tmp))
        print(f"({name}: both peers built in {time.perf_counter() - start:.0f} s)", flush=True)
        peers = {CLIPFORGE: clipforge_encoders(model, list(ref)), family.reference: ref}
        images = torch.rand(args.image_batch, 3, cfg.image_size, cfg.image_size)
        tokens = caption_tokens(args.text_batch, cfg.text.context_length, cfg.text.vocab_size, family.tokens)
        inputs = {mode: tokens if mode.startswith("text") else images for mode in ref}
        out, rate = interleaved_rates(peers, inputs, args.repeats)
    rows, worst = [], 0.0
    label = cfg.name + (f" ({family.note})" if family.note else "")
    for mode, x in inputs.items():
        diff = float((out[CLIPFORGE, mode] - out[family.reference, mode]).abs().max())
        ours, theirs = rate[CLIPFORGE, mode], rate[family.reference, mode]
        shape = f"{cfg.image_size} px" if not mode.startswith("text") else f"{x.shape[1]} tokens"
        rows.append(f"| {name} | {label} | {family.reference} | {mode}, {shape} | {ours:.2f} | {theirs:.2f} | "
                    f"**{ours / theirs:.2f}x** | {diff:.1e} |")  # fmt: skip
        worst = max(worst, diff)
    return rows, worst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", default="all", choices=["all", *FAMILIES], help="one family, or all in turn")
    p.add_argument("--image-batch", type=int, default=4)
    p.add_argument("--text-batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3, help="rounds over all peers and modes")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--metaclip2-size", default="shrunk", choices=["shrunk", "published"],
                   help="MetaCLIP 2 with ViT-B-32-sized towers (default), or the published ViT-H-14 (~8 GiB, ~8 min)")
    p.add_argument("--apple-mobileclip", metavar="PATH", help="a checkout of github.com/apple/ml-mobileclip "
                   "(its mobileclip package is not on PyPI), for --family mobileclip-s0")  # fmt: skip
    args = p.parse_args()
    if args.apple_mobileclip:
        sys.path.insert(0, args.apple_mobileclip)
    families = {**FAMILIES, **({"metaclip2": METACLIP2_PUBLISHED} if args.metaclip2_size == "published" else {})}
    torch.set_num_threads(args.threads)
    import open_clip
    import timm
    import transformers

    print(f"image batch {args.image_batch}, text batch {args.text_batch}, {args.threads} thread(s), {args.repeats} "
          f"rounds; open_clip {open_clip.__version__}, timm {timm.__version__}, transformers "
          f"{transformers.__version__}, torch {torch.__version__}; items/s, medians over rounds\n")  # fmt: skip
    print("| family | clipforge architecture | reference | mode | clipforge (/s) | reference (/s) | "
          "clipforge / reference | max abs diff |\n|---|---|---|---|---:|---:|---:|---:|", flush=True)  # fmt: skip
    for name in families if args.family == "all" else [args.family]:
        no_apple = importlib.util.find_spec("mobileclip") is None
        if args.family == "all" and families[name].peer is apple_peer and no_apple:
            print(f"| {name} | {families[name].arch} | skipped: pass --apple-mobileclip PATH | | | | | |", flush=True)
            continue
        rows, worst = measure(name, families[name], args)
        print(*rows, sep="\n", flush=True)
        if worst > MAX_DIFF:
            sys.exit(f"{name}: the peers' embeddings differ by {worst:.1e}; the timings would not compare the same "
                     "computation")  # fmt: skip
        gc.collect()  # the family's models go before the next one's are built
    print(f"\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")  # Linux: KiB


if __name__ == "__main__":
    main()
