"""``nn.MultiheadAttention`` whose projections send errors through a rule's feedback.

PyTorch's attention reads its packed input projection ``in_proj_weight`` (3E × E) and
``out_proj.weight`` directly in a functional kernel, so swapping the ``out_proj`` Linear alone
would change nothing. :class:`FeedbackMultiheadAttention` keeps every parameter and buffer of
the original (state dicts and the inference fast path of ``nn.TransformerEncoderLayer`` still
work) and recomputes attention with the packed projection and ``out_proj`` routed through
feedback; the attention product itself (softmax(QKᵀ/√d)V) has no weights and stays exact.

Converted: modules with one embedding size for query, key and value (``kdim = vdim =
embed_dim``), without ``bias_k``/``bias_v`` and ``add_zero_attn``; the rest stay on BP.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .functional import LinearFeedbackFn, feedback_linear, route


def convertible(mha: nn.MultiheadAttention) -> str | None:
    """Why ``mha`` cannot be converted, or None if it can."""
    if not mha.kdim == mha.vdim == mha.embed_dim:
        return "kdim/vdim differ from embed_dim"
    if mha.bias_k is not None or mha.add_zero_attn:
        return "bias_k/bias_v or add_zero_attn"
    return None


def _additive(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """A boolean 'masked out' mask or a float mask, as a float mask to add to scores."""
    if mask is None or mask.is_floating_point():
        return None if mask is None else mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))


class FeedbackMultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` with ``in_proj_feedback`` for the packed q/k/v projection."""

    in_proj_feedback: nn.Module

    def _project_in(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        w, b, fb = self.in_proj_weight, self.in_proj_bias, self.in_proj_feedback
        if query is key and key is value:
            return feedback_linear(query, w, b, fb).chunk(3, dim=-1)
        if fb.direct:
            raise NotImplementedError(f"{fb.rule_name}: direct feedback to attention with separate query/key/value "
                                      "inputs is not supported")
        # cross-attention: each input through its third of the packed weight and feedback
        routed = route(fb, query, w)
        ws, bs = w.chunk(3), (None,) * 3 if b is None else b.chunk(3)
        if routed is None:
            return tuple(F.linear(t, wi, bi) for t, wi, bi in zip((query, key, value), ws, bs))
        ms = routed[0].chunk(3)
        return tuple(
            LinearFeedbackFn.apply(t, wi, bi, mi, fb, None) for t, wi, bi, mi in zip((query, key, value), ws, bs, ms)
        )

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        same = query is key and key is value  # self-attention stays one tensor (one packed projection)
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) if t.dim() == 3 else t for t in (query, key, value))
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
        if same:
            key = value = query
        n, lq, e = query.shape
        h, d = self.num_heads, self.head_dim
        q, k, v = self._project_in(query, key, value)
        q, k, v = (t.reshape(n, -1, h, d).transpose(1, 2) for t in (q, k, v))
        mask = self._mask(attn_mask, key_padding_mask, q.dtype, n, lq, k.shape[2])
        causal = is_causal and mask is None
        p = self.dropout if self.training else 0.0
        if need_weights:
            out, weights = _attention_with_weights(q, k, v, mask, causal, p)
        else:
            out, weights = F.scaled_dot_product_attention(q, k, v, mask, p, is_causal=causal), None
        out = self.out_proj(out.transpose(1, 2).reshape(n, lq, e))
        if weights is not None and average_attn_weights:
            weights = weights.mean(dim=1)
        if not batched:
            out = out.squeeze(0)
            weights = None if weights is None else weights.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights

    def _mask(self, attn_mask, key_padding_mask, dtype, n, lq, lk) -> Tensor | None:
        """attn_mask (L,S) or (N·H,L,S) plus key_padding_mask (N,S), as one additive mask."""
        mask = _additive(attn_mask, dtype)
        if mask is not None and mask.dim() == 3:
            mask = mask.view(n, self.num_heads, lq, lk)
        pad = _additive(key_padding_mask, dtype)
        if pad is not None:
            pad = pad.view(n, 1, 1, lk)
            mask = pad if mask is None else mask + pad
        return mask


def _attention_with_weights(q, k, v, mask, causal, p):
    """Attention that also returns the per-head weights (when ``need_weights``)."""
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    if causal:
        lq, lk = scores.shape[-2:]
        scores = scores.masked_fill(torch.ones(lq, lk, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    if mask is not None:
        scores = scores + mask
    weights = scores.softmax(dim=-1)
    return F.dropout(weights, p) @ v, weights
