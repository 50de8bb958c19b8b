"""The module route's rank: fields with a one-hot mask at one layer (the pinch), giving dim W_φ(θ) without a D × D
matrix."""
from __future__ import annotations

from collections.abc import Callable

import torch

from .chain import _Chain, _OVERSAMPLE, _masked_output, _random_factors, _through_layers
from .fields import Field, VectorFields
from .memory import _choose_pinch, _groups_per_chunk
from .rank import independent_rows

Tensor = torch.Tensor


def _module_fields(chain: _Chain, rows: int, seed: int) -> VectorFields:
    """``rows`` random fields ∂φᵀc of the path factorisation, c of product form: gradients of the
    masked net (``_masked_output``) at random inputs, masks and output weights."""
    gen = torch.Generator().manual_seed(seed)
    masks, a, s = _random_factors(chain, rows, gen)
    x = torch.randn(rows, chain.widths[0], generator=gen, dtype=torch.float64)

    def outputs(weights: Tensor | None) -> Callable[[Tensor], Tensor]:
        def values(theta: Tensor) -> Tensor:
            Ws, bs = chain.blocks(theta)
            rest = tuple(t for l in range(chain.q) for t in ((Ws[l],) if l else ()) + ((bs[l],) if chain.bias[l] else ()))
            first = x @ Ws[0].T
            out = torch.func.vmap(lambda f, m, aa, ss: _masked_output(chain, f, rest, m, aa, ss))(first, masks, a, s)
            return out if weights is None else weights @ out
        return values

    def combination(weights: Tensor) -> Field:
        return lambda theta: torch.func.jacrev(outputs(weights))(theta)

    return VectorFields(combination(torch.eye(rows, dtype=torch.float64)), chain.D,
                        tuple(f"theta_{i}" for i in range(chain.D)), chain.description, outputs(None), combination)


def _pinched_output(chain: _Chain, layer: int, w_in: Tensor, b_in: Tensor, w_out: Tensor, shared: tuple[Tensor, ...],
                    x: Tensor, masks: Tensor, a: Tensor, s: Tensor, c: Tensor) -> Tensor:
    """The masked net (``_masked_output``) with the mask c·e_i at hidden layer ``layer`` (input
    c·e_i for layer 0): everything passes through neuron i, whose incoming row, bias and outgoing
    column are ``w_in``, ``b_in``, ``w_out``; ``shared`` holds the other blocks that matter, in θ's order."""
    it = iter(shared)
    if layer == 0:
        z = c
    else:
        z = w_in @ _through_layers(chain, it, x, 0, layer - 1, masks, s)
        if chain.bias[layer - 1]:
            z = z + s[layer - 1] * b_in
        z = c * z
    return a @ _through_layers(chain, it, w_out * z, layer, chain.q, masks, s, weighted_first=False)


def _pinch_blocks(chain: _Chain, layer: int, theta: Tensor) -> tuple[Tensor, Tensor, Tensor, tuple[Tensor, ...], Tensor, Tensor]:
    """Per neuron i of the pinched layer: w_in (rows), b_in, w_out (columns); the shared blocks;
    and the indices in θ of each neuron's block (n, block) and of the shared parameters."""
    Ws, bs = chain.blocks(theta)
    n = chain.widths
    index = torch.arange(chain.D)
    iWs, ibs = chain.blocks(index)
    if layer == 0:
        w_in, b_in = theta.new_zeros(n[0], 0), theta.new_zeros(n[0])
        block_index = iWs[0].T
    else:
        w_in = Ws[layer - 1]
        b_in = bs[layer - 1] if chain.bias[layer - 1] else theta.new_zeros(n[layer])
        parts = [iWs[layer - 1]] + ([ibs[layer - 1][:, None]] if chain.bias[layer - 1] else []) + [iWs[layer].T]
        block_index = torch.cat(parts, dim=1)
    w_out = Ws[layer].T
    shared, shared_index = [], []
    for l in range(chain.q):
        if l in (layer - 1, layer):
            if l == layer and chain.bias[l]:
                shared.append(bs[l])
                shared_index.append(ibs[l])
            continue
        shared.append(Ws[l])
        shared_index.append(iWs[l].reshape(-1))
        if chain.bias[l]:
            shared.append(bs[l])
            shared_index.append(ibs[l])
    return w_in, b_in, w_out, tuple(shared), block_index, torch.cat(shared_index) if shared_index else index[:0]


class _LawGradients:
    """The gradients ∇h_l of a chain's known laws at θ, used through chunked JVPs and VJPs so
    that the L×D Jacobian is never held (for the 784-256-128-10 MLP it would be 0.7 GB)."""

    def __init__(self, chain: _Chain, theta: Tensor, seed: int):
        self.chain, self.theta, self.seed = chain, theta, seed
        self.count = chain.known_law_rows() if chain.q > 1 else 0
        self.step = max(1, int(2e6 // max(1, chain.D)))
        self._norms: Tensor | None = None

    def _jvps(self, tangents: Tensor) -> Tensor:
        """(∇h_l · t) for every law l and row t of ``tangents``: (rows, laws)."""
        f = lambda t: torch.func.jvp(self.chain.known_laws, (self.theta,), (t,))[1]  # noqa: E731
        return torch.cat([torch.func.vmap(f)(tangents[i:i + self.step]) for i in range(0, len(tangents), self.step)])

    def norms(self) -> Tensor:
        if self._norms is None:
            _, pullback = torch.func.vjp(self.chain.known_laws, self.theta)  # type: ignore[misc]  # stub counts has_aux's output
            eye = torch.eye(self.count, dtype=self.theta.dtype)
            self._norms = torch.cat([torch.func.vmap(lambda c: pullback(c)[0])(eye[i:i + self.step]).norm(dim=1)
                                     for i in range(0, self.count, self.step)]).clamp_min(1e-300)
        return self._norms

    def largest_inner(self, vectors: Tensor) -> float:
        """max |⟨v, ∇h_l⟩| / (‖v‖‖∇h_l‖) over the rows v of ``vectors`` and the laws."""
        inner = self._jvps(vectors) / vectors.norm(dim=1, keepdim=True).clamp_min(1e-300)
        return float((inner.abs() / self.norms()).max())

    def rank(self, rtol: float) -> int:
        """rank of the laws' Jacobian G (L×D) as the rank of GΩ for a Gaussian Ω (D×(L+8), drawn in
        chunks): equal with probability one, and L×(L+8) numbers instead of L×D."""
        if not self.count:
            return 0
        gen = torch.Generator().manual_seed(self.seed + 7)
        columns = []
        for i in range(0, self.count + _OVERSAMPLE, self.step):
            rows = min(self.step, self.count + _OVERSAMPLE - i)
            columns.append(self._jvps(torch.randn(rows, self.chain.D, generator=gen, dtype=self.theta.dtype)))
        sketch = torch.cat(columns).T / self.norms()[:, None]  # unit-normalised laws, (L, L+8)
        return independent_rows(sketch, rtol)


def _pinched_rank(chain: _Chain, theta: Tensor, rtol: float, seed: int,
                  layer: int | None = None) -> tuple[int, int, float, float, float, int]:
    """dim W_φ(θ) from fields with a one-hot mask at one layer, never forming a D×D matrix.

    A field with mask e_i at hidden layer ℓ (input e_i for ℓ = 0) touches only neuron i's own
    parameters (its block) and the shared ones, so the sampled fields form a block arrow.
    Rotating neuron i's group by the SVD of its block part B_i splits it into rank(B_i) rows
    that are independent of everything else and rows that live on the shared columns only;
    so dim = Σ_i rank B_i + rank(stack of the shared rows). The net is linear (affine, with
    biases after ℓ) in that mask, so masks e_i (and 0) span what every mask spans: these fields
    span W_φ(θ) like dense ones. Returns (dim, fields, smallest accepted and largest rejected
    singular value of the unit-normalised fields, law residual, rank of the known laws' gradients).
    """
    p = _choose_pinch(chain, layer)
    group = torch.cat([torch.arange(p.neurons).repeat_interleave(p.per_group),
                       torch.zeros(p.zero_rows, dtype=torch.long)])
    c = torch.cat([theta.new_ones(p.neurons * p.per_group), theta.new_zeros(p.zero_rows)])
    w_in, b_in, w_out, shared, block_index, shared_index = _pinch_blocks(chain, p.layer, theta)
    has_b_in = p.layer > 0 and chain.bias[p.layer - 1]

    def output(wi, bi, wo, sh, xx, m, aa, ss, cc):
        return _pinched_output(chain, p.layer, wi, bi, wo, sh, xx, m, aa, ss, cc)
    grad = torch.func.vmap(torch.func.grad(output, argnums=(0, 1, 2, 3)), in_dims=(0, 0, 0, None, 0, 0, 0, 0, 0))

    def fields(rows: Tensor) -> tuple[Tensor, Tensor]:
        """Block and shared parts of the unit-normalised fields ``rows`` (consecutive), whose random
        factors are drawn here, seeded by the first row, so that they never exist all at once."""
        g = group[rows]
        gen = torch.Generator().manual_seed(seed * 1_000_003 + int(rows[0]))
        masks, a, s = _random_factors(chain, len(rows), gen)
        x = torch.randn(len(rows), chain.widths[0], generator=gen, dtype=theta.dtype)
        dwi, dbi, dwo, dsh = grad(w_in[g], b_in[g], w_out[g], shared, x, masks, a, s, c[rows])
        Bp = torch.cat([dwi] + ([dbi[:, None]] if has_b_in else []) + [dwo], dim=1)
        Cp = torch.cat([d.reshape(len(rows), -1) for d in dsh], dim=1) if dsh else theta.new_zeros(len(rows), 0)
        norms = torch.sqrt((Bp ** 2).sum(1) + (Cp ** 2).sum(1)).clamp_min(1e-300)[:, None]
        return Bp / norms, Cp / norms

    laws = _LawGradients(chain, theta, seed)
    residual = 0.0
    # the rows are unit vectors and the rotations orthogonal, so a singular value is compared with
    # rtol itself: a group (or the stack) that is round-off through and through has rank 0
    accepted, rejected, rank_blocks = [], [0.0], 0
    # the shared rows go into one preallocated tensor: many small copies interleaved with the
    # chunks' big buffers would keep the freed chunks from being returned to the system
    stacked = theta.new_empty(p.stack, p.shared)
    filled = 0
    step = _groups_per_chunk(p)
    for i0 in range(0, p.neurons, step):
        i1 = min(p.neurons, i0 + step)
        Bp, Cp = fields(torch.arange(i0 * p.per_group, i1 * p.per_group))
        Bp, Cp = Bp.reshape(i1 - i0, p.per_group, p.block), Cp.reshape(i1 - i0, p.per_group, p.shared)
        if laws.count:  # the known laws must be orthogonal to every field (checked on one per neuron)
            full = theta.new_zeros(i1 - i0, chain.D)
            full.scatter_(1, block_index[i0:i1], Bp[:, 0])
            full[:, shared_index] = Cp[:, 0]
            residual = max(residual, laws.largest_inner(full))
            del full
        U, S, _ = torch.linalg.svd(Bp, full_matrices=True)
        keep = S > rtol
        if bool(keep.any()):
            accepted.append(float(S[keep].min()))
        if bool((~keep).any()):
            rejected.append(float(S[~keep].max()))
        ranks = keep.sum(1).tolist()
        rank_blocks += sum(ranks)
        rotated = U.transpose(1, 2) @ Cp
        for k, r in enumerate(ranks):
            rows_k = rotated[k, r:]
            if filled + len(rows_k) > len(stacked):  # a rank below block − 1 (non-generic θ): grow
                stacked = torch.cat([stacked, theta.new_empty(len(rows_k) + p.stack // 2, p.shared)])
            stacked[filled:filled + len(rows_k)] = rows_k
            filled += len(rows_k)
        del Bp, Cp, U, rotated
    if p.zero_rows:
        zero_rows = torch.arange(p.neurons * p.per_group, p.rows)
        for j0 in range(0, p.zero_rows, max(1, int(2e6 // max(1, p.block + p.shared)))):
            j1 = min(p.zero_rows, j0 + max(1, int(2e6 // max(1, p.block + p.shared))))
            rows_z = fields(zero_rows[j0:j1])[1]
            if filled + len(rows_z) > len(stacked):
                stacked = torch.cat([stacked, theta.new_empty(len(rows_z), p.shared)])
            stacked[filled:filled + len(rows_z)] = rows_z
            filled += len(rows_z)
    stacked = stacked[:filled]
    s_stack = torch.linalg.svdvals(stacked) if stacked.numel() else stacked.new_zeros(0)
    del stacked
    rank_stack = int((s_stack > rtol).sum())
    if rank_stack:
        accepted.append(float(s_stack[rank_stack - 1]))
    if rank_stack < s_stack.numel():
        rejected.append(float(s_stack[rank_stack]))
    law_rank = laws.rank(rtol)
    return (rank_blocks + rank_stack, p.rows, min(accepted) if accepted else float("nan"), max(rejected), residual,
            law_rank)
