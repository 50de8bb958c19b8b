"""Ensembles from the nonlinear group action (App. H, Eq. 78–79), as one reusable layer.

The layer sits between two linear layers, z = Vx (+ bias) and y = U a (+ bias), and stands for
the activation a = σ(z). Member j of the ensemble applies g_j to the hidden layer and undoes it
with π_j on the way out: a_j = π_j σ(g_j z) (Eq. 79), i.e. the transformed weights
(U π_j, g_j V) of Eq. 78. The modes are the paper's ensemble and its four baselines:

- ``group``:       π_j = π(g_j, H_j) = σ(H_j)σ(g_j H_j)⁺ from a held-out batch H_j of h samples (Prop. 8)
- ``inverse``:     π_j = g_j⁻¹ (the linear action, exact only for a linear σ)
- ``random``:      π_j = I + εD_j, D_j random diagonal
- ``shuffle``:     P_j π(g_j, H_j) P_jᵀ, rows and columns shuffled by one random permutation P_j
                   (the same one, so that ε → 0 still gives the identity)
- ``permutation``: g_j = (I + ε/2 (I + S_j)) / (1 + ε), S_j a random permutation, π_j = g_j⁻¹

with g_j = exp(εT_j), T_j i.i.d. N(0, 1/h) (``permutation`` uses its own g_j). Samples are rows
here (PyTorch's convention): a batch z is (B, h) and member j returns σ(z g_jᵀ) π_jᵀ.
"""
from __future__ import annotations

import torch
from torch import nn

from .actions import nonlinear_pi
from .activations import ActivationLike, get_activation
from .validation import check_choice

Tensor = torch.Tensor

ENSEMBLE_MODES = ("group", "inverse", "random", "shuffle", "permutation")


class GroupActionEnsemble(nn.Module):
    """σ wrapped into ``num_g`` group-transformed copies; call [`fit`][] before use."""

    def __init__(self, activation: ActivationLike, mode: str = "group", epsilon: float = 1.0, num_g: int = 10,
                 rcond: float | None = 1e-6, seed: int = 0):
        super().__init__()
        self.activation = get_activation(activation)
        self.mode = check_choice("mode", mode, ENSEMBLE_MODES)
        if not epsilon >= 0:
            raise ValueError(f"epsilon={epsilon!r} must be >= 0")
        if not (isinstance(num_g, int) and num_g >= 1):
            raise ValueError(f"num_g={num_g!r} must be a positive integer")
        self.epsilon, self.num_g, self.rcond, self.seed = float(epsilon), num_g, rcond, seed
        self.register_buffer("g", torch.empty(0))  # (num_g, h, h)
        self.register_buffer("pi", torch.empty(0))  # (num_g, h, h)

    def extra_repr(self) -> str:
        return f"activation={self.activation.name}, mode={self.mode}, epsilon={self.epsilon:g}, num_g={self.num_g}"

    @torch.no_grad()
    def fit(self, hidden: Tensor) -> "GroupActionEnsemble":
        """Draw the group elements and compute π from held-out hidden pre-activations.

        ``hidden``: (num_g, k, h), batch j of k samples (rows) for member j; the modes that
        use π(g, H) need k = h (Prop. 8). Other modes only read h from it.
        """
        if hidden.ndim != 3 or hidden.shape[0] != self.num_g:
            raise ValueError(f"hidden must be (num_g={self.num_g}, k, h), got {tuple(hidden.shape)}")
        _, k, h = hidden.shape
        if self.mode in ("group", "shuffle") and k != h:
            raise ValueError(f"mode={self.mode!r} needs batches of k = h = {h} samples (Prop. 8), got k={k}")
        generator = torch.Generator().manual_seed(self.seed)
        dtype = torch.float64  # the solve is ill-conditioned at large ε: do it in double precision
        eye = torch.eye(h, dtype=dtype)
        T = torch.randn(self.num_g, h, h, generator=generator, dtype=dtype) / h ** 0.5
        g = torch.linalg.matrix_exp(self.epsilon * T)
        if self.mode in ("group", "shuffle"):
            H = hidden.detach().to("cpu", dtype).mT  # (num_g, h, k): columns are samples
            pi = nonlinear_pi(g, H, self.activation, on_rank_deficient="ignore", rcond=self.rcond)
            if self.mode == "shuffle":
                perms = [torch.randperm(h, generator=generator) for _ in range(self.num_g)]
                pi = torch.stack([p[r][:, r] for p, r in zip(pi, perms)])
        elif self.mode == "inverse":
            pi = torch.linalg.inv(g)
        elif self.mode == "random":
            pi = eye + self.epsilon * torch.diag_embed(torch.randn(self.num_g, h, generator=generator, dtype=dtype))
        else:  # interpolated permutation
            S = torch.stack([eye[torch.randperm(h, generator=generator)] for _ in range(self.num_g)])
            g = (eye + self.epsilon / 2 * (eye + S)) / (1 + self.epsilon)
            pi = torch.linalg.inv(g)
        self.g = g.to(hidden.device, hidden.dtype)
        self.pi = pi.to(hidden.device, hidden.dtype)
        return self

    def forward(self, z: Tensor) -> Tensor:
        """(B, h) pre-activations → (num_g, B, h): member j's σ(z g_jᵀ) π_jᵀ."""
        if self.g.numel() == 0:
            raise RuntimeError("call fit(hidden) before using the ensemble")
        h = self.g.shape[-1]
        if not isinstance(z, Tensor) or z.ndim < 1 or z.shape[-1] != h:
            shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"z must be (B, h = {h}) pre-activations, the width the ensemble was fitted on; got {shape}")
        if not z.is_floating_point():
            raise TypeError(f"z must be floating-point pre-activations, got dtype {z.dtype}")
        dtype = torch.promote_types(z.dtype, self.g.dtype)  # exact either way (float32 ⊂ float64)
        g, pi = self.g.to(dtype), self.pi.to(dtype)
        return self.activation.sigma(z.to(dtype).unsqueeze(0) @ g.mT) @ pi.mT


def vote(logits: Tensor) -> Tensor:
    """Ensemble prediction as the mode of the members' argmax (the paper's readout): (num_g, B, C) → (B,)."""
    return torch.mode(logits.argmax(dim=-1), dim=0).values


def mean_probability(logits: Tensor) -> Tensor:
    """Second readout: the members' softmax probabilities averaged, (num_g, B, C) → (B, C)."""
    return torch.softmax(logits, dim=-1).mean(dim=0)
