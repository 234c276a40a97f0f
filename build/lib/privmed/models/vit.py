"""A small Vision Transformer whose per-sample gradients work in every Opacus mode.

MONAI 1.6's ``ViT`` passes Opacus's validator but breaks inside Opacus's
per-sample-gradient code (checked with MONAI 1.6.1 / Opacus 1.6.0 / torch 2.13):

* hooks and functorch: the class token is a bare ``nn.Parameter`` on the root
  ``ViT`` module, so Opacus treats the *whole* network as one functorch layer,
  and ``ViT.forward`` returns a tuple ``(logits, hidden_states)``; Opacus's
  functorch code computes ``output * backprops`` and fails with
  ``TypeError: only integer tensors of a single element can be converted to an index``;
* expanded weights: the position embedding is a bare parameter added to the
  activations, ``RuntimeError: Expanded Weights encountered but cannot handle function add``.

(It also needs ``einops`` and ends its classification head in ``Tanh``.) This ViT
is built only from layers that Opacus has dedicated per-sample-gradient (and
ghost-norm) code for:

* patch embedding: non-overlapping patches cut with ``reshape``/``permute``,
  then ``nn.Linear`` (a linear layer on unfolded patches is exactly a strided
  convolution, but gets Opacus's ghost-clipping norm for linear layers);
* learned position embedding: an ``nn.Embedding`` over the token positions,
  looked up with the position indices expanded over the batch (so every mode,
  expanded weights included, sees an ordinary embedding lookup with a batch
  dimension);
* attention: ``nn.Linear`` for q/k/v and the output projection, the attention
  product itself is parameter-free (``scaled_dot_product_attention``);
* pre-norm ``nn.LayerNorm``, GELU MLP, mean-pooled tokens (no class token), a
  final ``nn.LayerNorm`` and a linear head.

No buffers, no bare parameters, no cross-sample operation: hooks, functorch,
expanded weights and ghost clipping all give exact per-sample gradients
(checked in ``tests/test_models.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbedding(nn.Module):
    """(B, C, H, W) -> (B, (H/p)*(W/p), dim): non-overlapping p x p patches, flattened, then linear."""

    def __init__(self, in_channels: int, patch_size: int, dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(in_channels * patch_size * patch_size, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.patch_size
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return self.proj(x.reshape(b, (h // p) * (w // p), c * p * p))


class LearnedPositionEmbedding(nn.Module):
    """Adds a learned vector per token position. The table is an ``nn.Embedding``
    (its weight is the usual ``(num_positions, dim)`` parameter), so Opacus treats
    it like any embedding layer in every per-sample-gradient mode."""

    def __init__(self, num_positions: int, dim: int) -> None:
        super().__init__()
        self.table = nn.Embedding(num_positions, dim)
        nn.init.trunc_normal_(self.table.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        # materialised (not a stride-0 expand): Opacus's ghost norm for embeddings .view()s it
        positions = torch.arange(t, device=x.device).repeat(b, 1)
        return x + self.table(positions)


class SelfAttention(nn.Module):
    """Multi-head self-attention from plain ``nn.Linear`` layers."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        y = F.scaled_dot_product_attention(q, k, v)  # (b, heads, t, d/heads)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class TokenBatchNorm(nn.Module):
    """BatchNorm over the feature dimension of (B, T, D) tokens. Non-private use only:
    it mixes samples of a batch, and Opacus's validator rejects it."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x.transpose(1, 2)).transpose(1, 2)


def _token_norm(norm: str, dim: int) -> nn.Module:
    # "group" is the per-sample normalisation family: for tokens that is LayerNorm
    # (GroupNorm with one group over the features of each token).
    if norm in ("group", "layer"):
        return nn.LayerNorm(dim)
    if norm == "batch":
        return TokenBatchNorm(dim)
    raise ValueError(f"unknown norm {norm!r} for the ViT; use 'group'/'layer' (LayerNorm) or 'batch'")


class MLP(nn.Sequential):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)); x + mlp(norm(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, norm: str) -> None:
        super().__init__()
        self.norm1 = _token_norm(norm, dim)
        self.attn = SelfAttention(dim, num_heads)
        self.norm2 = _token_norm(norm, dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Vision Transformer for 2D images.

    Args:
        in_channels: input channels.
        num_outputs: number of logits.
        image_size: side of the (square) input image; must be divisible by ``patch_size``.
        patch_size: patch side; default ``image_size // 8`` (64 tokens at any image size:
            8 px patches at 64 px, 16 at 128, 28 at 224).
        dim, depth, num_heads, mlp_ratio: transformer size. The default
            (192, 6, 3, 2.0) has ~1.8M parameters at 64 px.
        norm: ``"group"``/``"layer"`` -> LayerNorm (DP-compatible); ``"batch"`` -> BatchNorm
            over token features (non-private only).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_outputs: int = 1,
        *,
        image_size: int = 64,
        patch_size: int | None = None,
        dim: int = 192,
        depth: int = 6,
        num_heads: int = 3,
        mlp_ratio: float = 2.0,
        norm: str = "group",
    ) -> None:
        super().__init__()
        if patch_size is None:
            patch_size = max(1, image_size // 8)
        if image_size % patch_size:
            raise ValueError(f"image_size={image_size} is not divisible by patch_size={patch_size}")
        self.image_size = image_size
        self.patch_size = patch_size
        num_tokens = (image_size // patch_size) ** 2
        self.patch_embed = PatchEmbedding(in_channels, patch_size, dim)
        self.pos_embed = LearnedPositionEmbedding(num_tokens, dim)
        self.blocks = nn.Sequential(*[Block(dim, num_heads, mlp_ratio, norm) for _ in range(depth)])
        self.norm = _token_norm(norm, dim)
        self.head = nn.Linear(dim, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"this ViT was built for {self.image_size}x{self.image_size} inputs, got {tuple(x.shape[-2:])}"
            )
        x = self.pos_embed(self.patch_embed(x))
        x = self.norm(self.blocks(x))
        return self.head(x.mean(dim=1))


def build_vit(
    *,
    spatial_dims: int = 2,
    in_channels: int = 1,
    num_outputs: int = 1,
    image_size: int = 64,
    norm: str = "group",
    patch_size: int | None = None,
    dim: int = 192,
    depth: int = 6,
    num_heads: int = 3,
    mlp_ratio: float = 2.0,
) -> ViT:
    if spatial_dims != 2:
        raise ValueError(f"the ViT is 2D only, got spatial_dims={spatial_dims}")
    return ViT(
        in_channels,
        num_outputs,
        image_size=image_size,
        patch_size=patch_size,
        dim=dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
        norm=norm,
    )
