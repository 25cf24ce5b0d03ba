"""A small Vision Transformer (Dosovitskiy et al. 2021, "An image is worth 16×16 words:
Transformers for image recognition at scale", ICLR, arXiv 2010.11929).

    patches (Conv2d, kernel = stride = patch) → [class token; tokens] + learned positions
    → depth × pre-norm encoder block → norm → Linear head on the class token

    block: x = x + MHA(norm(x));  x = x + MLP(norm(x)),  MLP = Linear → GELU → Linear

The attention is ``nn.MultiheadAttention(batch_first=True)`` and the MLP plain ``nn.Linear``s,
so ``alignlab.convert`` reaches the packed q/k/v projection, ``out_proj``, the MLP, the patch
embedding and the head. No dropout. ``norm`` picks the norm in the blocks and the final one;
its default here is ``layer`` (the paper's LayerNorm). ``norm="none"`` is allowed and means
no normalisation at all (every one of those norms is an identity); ``batch`` normalises each
feature over the batch and the tokens together. Initialisation: the position embedding
~ N(0, 0.02²) and the class token 0, as in the authors' reference code; every other layer
keeps PyTorch's defaults (the reference code's zero-initialised head is not used: under BP
it would send no error back on the first step).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .checks import image_shape, positive_int, positive_number
from .norm import check_norm, make_norm


class EncoderBlock(nn.Module):
    """Pre-norm transformer encoder block: ``norm1``, ``attn``, ``norm2``, ``mlp``."""

    def __init__(self, dim: int, heads: int, hidden: int, norm: str):
        super().__init__()
        self.norm1 = make_norm(norm, dim, conv=False)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = make_norm(norm, dim, conv=False)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Modules: ``patch_embed``, ``cls_token``, ``pos_embed`` (parameters), ``blocks``,
    ``norm``, ``head``."""

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, *,
                 norm: str = "layer",       # norm in the blocks and before the head: none | batch | layer | rms
                 patch: int = 4,            # patch side; must divide H and W
                 dim: int = 128,            # token width
                 depth: int = 4,            # encoder blocks
                 heads: int = 4,            # attention heads; must divide dim
                 mlp_ratio: float = 2):     # MLP hidden width = int(dim · mlp_ratio)
        super().__init__()
        channels, height, width = image_shape("vit", in_shape)
        positive_int("vit", "num_classes", num_classes)
        check_norm(norm)
        for name, value in (("patch", patch), ("dim", dim), ("depth", depth), ("heads", heads)):
            positive_int("vit", name, value)
        positive_number("vit", "mlp_ratio", mlp_ratio)
        if height % patch or width % patch:
            raise ValueError(f"vit: patch {patch} must divide the image's height {height} and width {width}")
        if dim % heads:
            raise ValueError(f"vit: heads {heads} must divide dim {dim}")
        hidden = int(dim * mlp_ratio)
        if hidden < 1:
            raise ValueError(f"vit: mlp_ratio {mlp_ratio!r} gives an MLP of no units for dim {dim}")

        tokens = (height // patch) * (width // patch)
        self.patch_embed = nn.Conv2d(channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*(EncoderBlock(dim, heads, hidden, norm) for _ in range(depth)))
        self.norm = make_norm(norm, dim, conv=False)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (N, tokens, dim)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])
