"""Modern blocks as plain ``nn.Module`` classes: RMSNorm, multi-head attention (causal or not, with or without RoPE),
SwiGLU, a GPT-style language model and a small vision transformer. Written with ordinary torch operations (no fused kernels), so that
[`symmetry.module_symmetries`][] reads them off the graph like any user's model; the examples, the tests and the
modern-architecture figure use them.

The symmetries they carry: per head GL on W_q–W_k (restricted by RoPE to rotations and scalings commuting with each
frequency pair, Tran et al. 2026 Thm 4.4) and on W_v–W_o (Marcotte, Gribonval & Peyré 2025 Cor. 3.9–3.10; Tran et al.
Thm 4.3); SwiGLU's rescaling of the up/down pair (Tran et al. Thm 4.2); RMSNorm's scale invariance of the layer
before it (Kunin et al. 2021's scale symmetry, approximate at ε > 0); the softmax head's translation with a
cross-entropy loss (Marcotte et al. Prop. 3.11). None across a residual connection (Marcotte et al. Thm 4.7).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor

__all__ = ["RMSNorm", "CausalSelfAttention", "SwiGLU", "GPTBlock", "GPT", "ViT"]


class RMSNorm(nn.Module):
    """x / √(mean(x²) + ε) ⊙ γ over the last axis (Zhang & Sennrich 2019)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def _rotate_half(x: Tensor) -> Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention, bias-free q/k/v/o projections, RoPE on q and k (Su et al. 2021) unless
    ``rope=False``; the frequency of pair (i, i + d_h/2) is base^(−2i/d_h). Causal unless ``causal=False`` (every
    token attends to every token, as in a vision transformer); the mask leaves the symmetries unchanged."""

    def __init__(self, dim: int, heads: int, rope: bool = True, base: float = 10000.0, causal: bool = True):
        super().__init__()
        if dim % heads or (rope and (dim // heads) % 2):
            raise ValueError(f"dim must be a multiple of heads (and of 2·heads with rope), got dim={dim}, "
                             f"heads={heads}")
        self.heads, self.rope, self.base, self.causal = heads, rope, base, causal
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.o = nn.Linear(dim, dim, bias=False)

    def _rotary(self, T: int, head_dim: int, like: Tensor) -> tuple[Tensor, Tensor]:
        inv = self.base ** (-torch.arange(0, head_dim, 2, dtype=like.dtype, device=like.device) / head_dim)
        angles = torch.outer(torch.arange(T, dtype=like.dtype, device=like.device), inv)  # (T, d_h/2)
        angles = torch.cat((angles, angles), dim=-1)  # (T, d_h)
        return angles.cos(), angles.sin()

    def forward(self, x: Tensor) -> Tensor:
        B, T, D = x.shape
        h = D // self.heads
        q = self.q(x).view(B, T, self.heads, h).transpose(1, 2)  # (B, H, T, d_h)
        k = self.k(x).view(B, T, self.heads, h).transpose(1, 2)
        v = self.v(x).view(B, T, self.heads, h).transpose(1, 2)
        if self.rope:
            cos, sin = self._rotary(T, h, x)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)  # (B, H, T, d_h)
        return self.o(y.transpose(1, 2).reshape(B, T, D))


class SwiGLU(nn.Module):
    """W_down (SiLU(W_gate x) ⊙ W_up x) (Shazeer 2020)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class GPTBlock(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + SwiGLU(norm(x)); ``causal=False`` for an encoder block."""

    def __init__(self, dim: int, heads: int, hidden: int, rope: bool = True, causal: bool = True):
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, rope, causal=causal)
        self.norm2 = RMSNorm(dim)
        self.mlp = SwiGLU(dim, hidden)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    """Token embedding, ``layers`` GPT blocks, a final RMSNorm and an untied linear head (logits over the vocabulary)."""

    def __init__(self, vocab: int, dim: int = 32, heads: int = 4, hidden: int = 64, layers: int = 2,
                 rope: bool = True):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList([GPTBlock(dim, heads, hidden, rope) for _ in range(layers)])
        self.norm = RMSNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.embed(tokens)  # (B, T, D)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))  # (B, T, vocab)


class ViT(nn.Module):
    """A small vision transformer: a patch embedding (a ``patch``×``patch`` convolution of stride ``patch``), a
    learned absolute positional embedding added to the patch tokens, ``layers`` pre-norm encoder blocks
    (non-causal multi-head attention without RoPE, SwiGLU feed-forward), a final RMSNorm, the mean over the
    tokens and an untied linear head (class logits).

    Laws (Marcotte et al. Cor. 3.10, Tran et al. Thms 4.2–4.4): per head W_q,h W_q,hᵀ − W_k,h W_k,hᵀ and
    W_v,h W_v,hᵀ − W_o,hᵀ W_o,h (an absolute embedding is a bijection of the inputs, so the laws are those of
    plain attention), per SwiGLU unit ‖down[:, i]‖² − ‖up[i]‖², the head's column sums with a cross-entropy loss;
    none for the patch embedding and the positional embedding, which feed the residual stream."""

    def __init__(self, image_size: int = 32, patch: int = 4, channels: int = 3, classes: int = 10, dim: int = 32,
                 heads: int = 4, hidden: int = 64, layers: int = 2):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image_size={image_size} must be a multiple of patch={patch}")
        tokens = (image_size // patch) ** 2
        self.patch = nn.Conv2d(channels, dim, patch, stride=patch)
        self.pos = nn.Parameter(0.02 * torch.randn(1, tokens, dim))
        self.blocks = nn.ModuleList([GPTBlock(dim, heads, hidden, rope=False, causal=False) for _ in range(layers)])
        self.norm = RMSNorm(dim)
        self.head = nn.Linear(dim, classes, bias=False)

    def forward(self, images: Tensor) -> Tensor:
        x = self.patch(images).flatten(2).transpose(1, 2) + self.pos  # (B, N, D)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(1))  # (B, classes)
