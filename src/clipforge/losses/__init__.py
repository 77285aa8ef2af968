"""Contrastive losses as pure functions: CLIP (InfoNCE) and SigLIP, naive or chunked, local or distributed;
SimCLR's NT-Xent for a self-supervised image term."""

from clipforge.losses.chunked import infonce_terms, pairwise_sigmoid_loss
from clipforge.losses.contrastive import clip_loss
from clipforge.losses.distributed import all_gather_with_grad, gather_features
from clipforge.losses.siglip import siglip_loss
from clipforge.losses.simclr import nt_xent_loss

__all__ = [
    "all_gather_with_grad",
    "clip_loss",
    "gather_features",
    "infonce_terms",
    "nt_xent_loss",
    "pairwise_sigmoid_loss",
    "siglip_loss",
]
