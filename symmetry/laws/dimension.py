"""ALGO 2 (Marcotte et al.): dim Lie(W_φ)(θ) by brackets of the fields, and the number D − dim of independent
conservation laws."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..threads import torch_threads
from ..tuples import quiet_forward_mode
from .chain import _OVERSAMPLE, _module_chain
from .factorisations import Factorization
from .fields import Field, VectorFields, vector_fields
from .memory import DEFAULT_MAX_MEMORY, _check_memory, _estimate_chain, memory_estimate
from .module_fields import module_law_dimension
from .pinch import _module_fields, _pinched_rank
from .rank import RANK_RTOL, _Span, symmetry_law_count

Tensor = torch.Tensor


@dataclass
class LieAlgebraDimension:
    """What ALGO 2 found: D, dim Lie(W_φ)(θ), and the number of independent laws D − dim."""

    D: int
    dim: int
    dims_per_level: list[int]  # dim of W_φ(θ), W_φ + [W_φ, W_φ], … at the first point
    dims_at_points: list[int]  # the final dimension at each random point checked
    smallest_accepted: float  # smallest relative residual of a direction counted as new
    largest_rejected: float  # largest relative residual of a direction counted as dependent
    rtol: float
    seconds: float
    generators: int = 0  # fields ∇φ_i (or random combinations) kept as a basis of W_φ(θ)

    @property
    def laws(self) -> int:
        return self.D - self.dim


def _bracket_tables(B: Field, G: Field, theta: Tensor, chunk: int | None) -> tuple[Tensor, Tensor]:
    """For fields b_p (rows of B) and generators g_q (rows of G): the two terms of every
    bracket [b_p, g_q] = ∂b_p g_q − ∂g_q b_p, as (|B|, |G|, D) tables, by batched JVPs."""
    dB_G = torch.func.vmap(lambda g: torch.func.jvp(B, (theta,), (g,))[1], chunk_size=chunk)(G(theta))
    dG_B = torch.func.vmap(lambda b: torch.func.jvp(G, (theta,), (b,))[1], chunk_size=chunk)(B(theta))
    return dB_G.transpose(0, 1), dG_B


def _bracket_fields(B: Field, G: Field, p: Tensor, q: Tensor, chunk: int | None) -> Field:
    """θ ↦ the rows [b_p, g_q] for the index pairs (p, q): the fields new at the next level."""
    ps, p_index = torch.unique(p, return_inverse=True)
    qs, q_index = torch.unique(q, return_inverse=True)

    def fields(theta: Tensor) -> Tensor:
        dB_G, dG_B = _bracket_tables(lambda t: B(t)[ps], lambda t: G(t)[qs], theta, chunk)
        return dB_G[p_index, q_index] - dG_B[p_index, q_index]
    return fields


def _combined_bracket_terms(B: Callable[[Tensor], Field], G: Callable[[Tensor], Field], X: Tensor, Y: Tensor,
                            theta: Tensor) -> tuple[Tensor, Tensor]:
    """The two terms of [X_j·B, Y_j·G] = ∂(X_j·B)(Y_j·G) − ∂(Y_j·G)(X_j·B) for every row j, where
    ``B(weights)`` and ``G(weights)`` make the combined fields."""
    bx, gy = B(X)(theta), G(Y)(theta)
    d1 = torch.func.vmap(lambda x, v: torch.func.jvp(lambda t: B(x[None])(t)[0], (theta,), (v,))[1])(X, gy)
    d2 = torch.func.vmap(lambda y, v: torch.func.jvp(lambda t: G(y[None])(t)[0], (theta,), (v,))[1])(Y, bx)
    return d1, d2


def _combined_brackets(B: Callable[[Tensor], Field], G: Callable[[Tensor], Field], X: Tensor,
                       Y: Tensor) -> Callable[[Tensor], Field]:
    """The combination maker of the fields [X_j·B, Y_j·G] (one per row j)."""
    def fields(theta: Tensor) -> Tensor:
        d1, d2 = _combined_bracket_terms(B, G, X, Y, theta)
        return d1 - d2
    return lambda weights: (lambda theta: weights @ fields(theta))


@dataclass
class _Family:
    """``rows`` fields, known through ``combine``: weights (K, rows) ↦ θ ↦ the K combined fields."""

    rows: int
    combine: Callable[[Tensor], Field]

    def fields(self, dtype=torch.float64) -> Field:
        return self.combine(torch.eye(self.rows, dtype=dtype))


def _plain(F: Field, rows: int) -> _Family:
    return _Family(rows, lambda weights: (lambda theta: weights @ F(theta)))


def _dimension_at(vf: VectorFields, theta: Tensor, rtol: float, max_level: int,
                  random_combinations: bool = True) -> tuple[_Span, list[int], int]:
    """ALGO 2 at one point: grow a pointwise basis of right-nested brackets level by level.

    At a generic θ a field whose value lies in the span of the others' values stays in their
    span on a neighbourhood, with smooth coefficients, so its brackets add nothing new
    ([w, Σ c_j b_j] = Σ c_j [w, b_j] + (∂c_j·w) b_j): keeping only fields that raise the
    pointwise rank is exact. So W_φ(θ) is represented by a basis G of generator fields, and
    level k+1 brackets G with the fields B that were new at level k, in one batched call.
    When there are more pairs (b, g) than directions left to find, random combinations
    [X_j·B, Y_j·G] are bracketed instead: rank-one weights span every weight matrix, so
    generic ones span the same space as all pairs once they outnumber the directions left.
    """
    D = vf.D
    span = _Span(D)
    values = vf.fields(theta)
    kept = span.add(values.T, rtol)
    n_gen = len(kept)
    if n_gen == 0:  # every field vanishes at θ: nothing to bracket
        return span, [0], 0
    select = torch.eye(values.shape[0], dtype=values.dtype)[kept]
    G = _Family(n_gen, lambda weights: vf.combine(weights @ select))
    # vmap chunk: a JVP of G holds about |G|·(size of φ) numbers per tangent; keep a chunk near 2·10⁷
    work = n_gen * (vf.function(theta).numel() if vf.function is not None else values.numel())
    chunk = max(1, int(2e7 // max(1, work)))
    gen = torch.Generator().manual_seed(0)
    dims = [span.dim]
    B, first = G, True
    while span.dim < D and len(dims) < max_level:
        budget = D - span.dim + 8
        if random_combinations and (B.rows * (B.rows - 1) // 2 if first else B.rows * n_gen) > budget:
            X = torch.randn(budget, B.rows, generator=gen, dtype=theta.dtype)
            Y = torch.randn(budget, n_gen, generator=gen, dtype=theta.dtype)
            d1, d2 = _combined_bracket_terms(B.combine, G.combine, X, Y, theta)
            new = span.add((d1 - d2).T, rtol, d1.norm(dim=-1) + d2.norm(dim=-1))
            dims.append(span.dim)
            if not new:
                break
            B = _Family(len(new), _combined_brackets(B.combine, G.combine, X[new], Y[new]))
        else:
            Gf, Bf = G.fields(theta.dtype), B.fields(theta.dtype)
            if first:  # B = G: one table T[q, p] = ∂g_p g_q serves both terms
                T = torch.func.vmap(lambda g, F=Gf: torch.func.jvp(F, (theta,), (g,))[1], chunk_size=chunk)(Gf(theta))
                dB_G, dG_B = T.transpose(0, 1), T
            else:
                dB_G, dG_B = _bracket_tables(Bf, Gf, theta, chunk)
            candidates = dB_G - dG_B  # (|B|, |G|, D): [b_p, g_q]
            scales = dB_G.norm(dim=-1) + dG_B.norm(dim=-1)
            p, q = torch.meshgrid(torch.arange(B.rows), torch.arange(n_gen), indexing="ij")
            # at level 2 both sides are generators: [g_p, g_q] for p < q only (antisymmetry)
            mask = (p < q) if first else torch.ones_like(p, dtype=torch.bool)
            p, q = p[mask], q[mask]
            new = span.add(candidates[p, q].T, rtol, scales[p, q])
            dims.append(span.dim)
            if not new:
                break
            B = _plain(_bracket_fields(Bf, Gf, p[new], q[new], chunk), len(new))
        first = False
    return span, dims, n_gen


def lie_algebra_dimension(model: Factorization | VectorFields | torch.nn.Module, theta: Tensor | None = None, *,
                          points: int = 2, seed: int = 0, rtol: float = RANK_RTOL, max_level: int = 50,
                          random_combinations: bool = True, max_memory: float = DEFAULT_MAX_MEMORY,
                          example_input=None, loss: str | None = None) -> LieAlgebraDimension:
    """ALGO 2: dim Lie(W_φ)(θ) at ``points`` random points (or at θ, then random ones), and D − dim.

    Ranks are taken in float64 on unit-normalised vectors: a bracket counts as a new
    direction when its component outside the current span exceeds ``rtol`` (relative).
    The dimension must agree at every point checked (it is locally constant at generic
    points); otherwise a ValueError says so. The result reports the smallest accepted and
    the largest rejected residual, so the gap behind the rank decision is visible.
    ``random_combinations=False`` brackets every pair instead of random combinations
    (same answer with probability one, slower for deep ReLU nets).

    A ``torch.nn.Module`` (Linear, ReLU, LeakyReLU, Identity in nested ``nn.Sequential``,
    biases included) is counted in its path factorisation without listing the paths
    (``_chain_dimension``), at ``points`` random generic θ; ``theta`` must then be None.
    Before anything is allocated, [`memory_estimate`][] is compared with ``max_memory``
    (bytes) and a larger problem is refused with a MemoryError giving both.

    Any other module (a residual block, attention: not a chain) is counted from the gradients of its outputs on
    ``example_input`` (one batch; ``loss``: None, or "cross_entropy" for the log-softmax of the output), the
    count checked to be the same on half of the batch ([`symmetry.laws.module_fields`][]); without
    ``example_input`` it is refused by name.
    """
    if not isinstance(points, int) or points < 1:
        raise ValueError(f"points must be a positive integer, got {points!r}")
    if not (0 < rtol < 1):
        raise ValueError(f"rtol must lie in (0, 1), got {rtol!r}")
    if isinstance(model, torch.nn.Module):
        if theta is not None:
            raise ValueError("theta must be None for a torch.nn.Module: the count is taken at random generic "
                             "parameters (it is a property of the architecture)")
        return _any_module_dimension(model, example_input, loss, points=points, seed=seed, rtol=rtol,
                                     max_level=max_level, random_combinations=random_combinations,
                                     max_memory=max_memory)
    if example_input is not None or loss is not None:
        raise ValueError(f"example_input and loss are for a torch.nn.Module; model is a {type(model).__name__}")
    if isinstance(model, (Factorization, VectorFields)):
        _check_memory(memory_estimate(model), max_memory, model.description)
    start = time.perf_counter()
    vf = vector_fields(model, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    thetas = [] if theta is None else [theta]
    while len(thetas) < points:
        thetas.append(vf.random_point(gen))
    spans, dims_at, first_dims, n_generators = [], [], None, 0
    with quiet_forward_mode(), torch_threads(1):  # thousands of tiny ops: a second thread only waits
        for point in thetas:
            span, dims, n_gen = _dimension_at(vf, vf.check(point), rtol, max_level, random_combinations)
            spans.append(span)
            dims_at.append(span.dim)
            if first_dims is None:
                first_dims, n_generators = dims, n_gen
    if len(set(dims_at)) != 1:
        raise ValueError(f"dim Lie(W_phi) differs between the points checked: {dims_at}; the points may not be "
                         f"generic, or rtol={rtol} is too loose or too tight for this model")
    accepted = [a for s in spans for a in s.accepted]
    return LieAlgebraDimension(D=vf.D, dim=dims_at[0], dims_per_level=first_dims, dims_at_points=dims_at,  # type: ignore[arg-type]
                               smallest_accepted=min(accepted) if accepted else float("nan"),
                               largest_rejected=max(s.rejected_max for s in spans), rtol=rtol,
                               seconds=time.perf_counter() - start, generators=n_generators)


def count_conservation_laws(model: Factorization | VectorFields | torch.nn.Module, *,
                            max_memory: float = DEFAULT_MAX_MEMORY, symmetry=None, **kwargs) -> int:
    """The number of independent conservation laws, D − dim Lie(W_φ)(θ) at a generic θ.

    ``model``: a Factorization, VectorFields or torch.nn.Module (see [`lie_algebra_dimension`][]);
    a problem whose [`memory_estimate`][] exceeds ``max_memory`` bytes (default 4 GiB) is
    refused with a MemoryError before it allocates.

    ``symmetry``: a [`symmetry.groups.Symmetry`][] of the module (e.g. ``module_symmetries(model)``), compared
    with the count: its quantities are conservation laws, so their number of independent ones
    ([`symmetry_law_count`][], at the module's parameters) cannot exceed it; a symmetry that claims more is
    refused (RuntimeError), one that gives fewer leaves laws no symmetry of it explains. A Symmetry is not
    counted in place of the model: the count is a property of the model's φ, and takes every law, also those
    no group gives (Marcotte et al. count them all).

    ``example_input``, ``loss``: a module that is not a chain of Linear layers and ReLUs (a residual block,
    attention) is counted from the gradients of its outputs on ``example_input`` (the log-softmax's for
    ``loss="cross_entropy"``), see [`lie_algebra_dimension`][].
    """
    if symmetry is not None and not isinstance(model, torch.nn.Module):
        from ..groups import NotSupportedError

        raise NotSupportedError(f"symmetry= is compared with the count of a torch.nn.Module (its named parameters); "
                                f"model is a {type(model).__name__}, whose θ is a flat vector no symmetry acts on")
    laws = lie_algebra_dimension(model, max_memory=max_memory, **kwargs).laws
    if symmetry is not None:
        assert isinstance(model, torch.nn.Module)
        found = symmetry_law_count(symmetry, {n: p.detach() for n, p in model.named_parameters()})
        if found > laws:
            raise RuntimeError(f"the symmetry's quantities have {found} independent entries, more than the {laws} "
                               f"conservation laws of {type(model).__name__}: they are not all conserved "
                               "(the symmetry was not found in this model, or it is misread)")
    return laws


def _any_module_dimension(model, example_input, loss, **options) -> LieAlgebraDimension:
    """A chain of Linear layers and ReLUs by its path factorisation (every input); any other module by the
    gradient fields of its outputs on ``example_input`` (Marcotte et al.), refused by name without one."""
    from ..groups import NotSupportedError

    if loss not in (None, "cross_entropy"):
        raise ValueError(f"loss={loss!r} is not allowed; choose None or 'cross_entropy'")
    try:
        chain, chain_error = _module_chain(model), None  # the module read once, here
    except NotSupportedError as error:
        chain, chain_error = None, error
    if chain is not None and loss is None:  # the chain's outputs over every input
        names = ("points", "seed", "rtol", "max_level", "max_memory", "random_combinations")
        return _chain_dimension(chain, *(options[k] for k in names))
    if example_input is None:
        why = str(chain_error).rstrip(".") if chain_error is not None else \
            "loss='cross_entropy' counts the laws of the log-softmax of the outputs, read on inputs"
        raise NotSupportedError(f"{why}. Pass example_input= (one batch the model takes) to count it from the "
                                "gradients of its outputs on that batch (Marcotte et al.: D − dim of the Lie algebra "
                                "they generate)") from None
    return module_law_dimension(model, example_input, loss, lambda fields: lie_algebra_dimension(fields, **options))


def _chain_dimension(chain, points: int, seed: int, rtol: float, max_level: int, max_memory: float,
                     random_combinations: bool, pinch: int | None = None) -> LieAlgebraDimension:
    """ALGO 2 for a module read as a chain (``_module_chain``), in the path factorisation φ (one output per
    path), never listing paths.

    ⟨c, φ(θ)⟩ for a cotangent c of product form (one factor per layer) is the net on one
    activation region with the diagonal masks of c, so the fields ∂φᵀc are gradients of masked
    nets (``_masked_output``); product tensors span every cotangent. With only free
    activations: a lower bound dim W_φ(θ) ≤ dim Lie from fields with a one-hot mask at one layer
    (``_pinched_rank``, no D×D matrix), an upper bound dim Lie ≤ D − rank of the known laws'
    gradients (they are laws: checked orthogonal to the fields); when the two meet, that is
    dim Lie, with no bracket needed. An identity between two Linear layers (GL symmetry) needs
    brackets: the dense ALGO 2 runs on D masked-net fields then. ``pinch`` forces the layer."""
    estimate = _estimate_chain(chain)
    _check_memory(estimate, max_memory, chain.description)
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed + 1)
    thetas = [chain.random_point(gen) for _ in range(points)]
    if estimate.method == "dense":
        rows = chain.D + _OVERSAMPLE
        found = lie_algebra_dimension(_module_fields(chain, rows, seed), thetas[0], points=points, seed=seed,
                                      rtol=rtol, max_level=max_level, random_combinations=random_combinations,
                                      max_memory=max_memory)
        found.seconds = time.perf_counter() - start
        return found
    dims, accepted, rejected, n_rows = [], [], [], 0
    with quiet_forward_mode(), torch_threads(1):
        for theta in thetas:
            dim, n_rows, acc, rej, residual, law_rank = _pinched_rank(chain, theta, rtol, seed, pinch)
            if residual > 1e-10:
                raise RuntimeError(f"a known law of {chain.description} is not orthogonal to the fields "
                                   f"(residual {residual:.3g}): the factorisation is wrong")
            ceiling = chain.D - law_rank
            if dim != ceiling:
                raise RuntimeError(f"dim W_phi = {dim} falls short of D − (independent known laws) = {ceiling} "
                                   f"for {chain.description}; brackets would be needed, which this path does "
                                   "not take")
            dims.append(dim)
            accepted.append(acc)
            rejected.append(rej)
    if len(set(dims)) != 1:
        raise ValueError(f"dim Lie(W_phi) differs between the points checked: {dims}")
    return LieAlgebraDimension(D=chain.D, dim=dims[0], dims_per_level=[dims[0]], dims_at_points=dims,
                               smallest_accepted=min(accepted), largest_rejected=max(rejected), rtol=rtol,
                               seconds=time.perf_counter() - start, generators=n_rows)
