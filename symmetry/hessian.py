"""Hessians of a loss (App. G): of a pure function of a parameter tuple, or of a user's ``nn.Module``.

``loss_fn`` maps a parameter tuple to a scalar, e.g. ``model.loss_function(X, Y)``.
The full matrix comes from ``torch.func.hessian`` (forward-over-reverse); models too large
for it use Hessian-vector products (reverse-over-reverse: one gradient graph kept, each product
one backward pass through it) and Lanczos with full reorthogonalisation for the top k ([`lambda_max`][]: k = 1).
Every loss is evaluated with ``scaled_dot_product_attention`` on its math backend
(``torch.nn.attention.sdpa_kernel(SDPBackend.MATH)``): torch's fused attention kernels have no second derivative.
[`hessian_top_k`][] takes a module, a loss and data (one batch, or batches summed exactly), and optionally a
symmetry ([`symmetry.groups.Symmetry`][]): its orbit's tangents ([`orbit_tangents`][]) are flat at a minimum
(Cor. 11: the orbit of a minimum lies in the minimum; Eq. 20–22 give its dimension) and are deflated.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, NamedTuple, Sequence

import torch

from ._tools import math_attention, without_frozen
from .tuples import flatten, jvp, quiet_forward_mode, unflatten
from .types import LossFn, Params
from .validation import check_choice, check_data, check_params

Tensor = torch.Tensor


def _flat_loss(loss_fn: LossFn, params: Params) -> Callable[[Tensor], Tensor]:
    def f(vector: Tensor) -> Tensor:
        with math_attention():  # second derivatives: attention on its math backend
            value = loss_fn(unflatten(vector, params))
        if value.ndim != 0:
            raise ValueError(f"loss_fn must return a scalar, got shape {tuple(value.shape)} "
                             f"(a batched loss? take one configuration)")
        return value

    return f


def loss_hessian(loss_fn: LossFn, params: Params) -> Tensor:
    """The exact (D, D) Hessian of L with respect to all parameters, flattened in tuple order."""
    params = check_params("params", params)
    with quiet_forward_mode():
        H = torch.func.hessian(_flat_loss(loss_fn, params))(flatten(params))
    return 0.5 * (H + H.mT)  # symmetric up to round-off; make it exactly so for eigvalsh


def hessian_eigenvalues(loss_fn: LossFn, params: Params) -> Tensor:
    """All D eigenvalues of the Hessian, ascending (symmetric solver ``eigvalsh``)."""
    return torch.linalg.eigvalsh(loss_hessian(loss_fn, params))


def hessian_vector_product(loss_fn: LossFn, params: Params, mode: str = "reverse") -> Callable[[Tensor], Tensor]:
    """v ↦ H v at ``params`` (flattened v), without forming H.

    ``mode="reverse"`` (default): reverse-over-reverse, the gradient's graph built once and each product
    one backward pass through it (benchmarks/bench_hessian.py: the faster one on CPU);
    ``"forward"``: forward-mode over ∇L (``torch.func.jvp``), recomputing the gradient each time.
    """
    params = check_params("params", params)
    check_choice("mode", mode, HVP_MODES)
    x = flatten(params).detach()
    if mode == "forward":
        grad = torch.func.grad(_flat_loss(loss_fn, params))

        def forward_hvp(v: Tensor) -> Tensor:
            return jvp(grad, (x,), (v.to(x),))[1]

        return forward_hvp
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        (gradient,) = torch.autograd.grad(_flat_loss(loss_fn, params)(x), x, create_graph=True)
    return _graph_hvp(gradient, [x], torch.cat)


HVP_MODES = ("reverse", "forward")


def _graph_hvp(gradient: Tensor, inputs: Sequence[Tensor], join: Callable) -> Callable[[Tensor], Tensor]:
    """v ↦ ∂⟨gradient, v⟩/∂inputs through a kept graph (reverse-over-reverse)."""

    def hvp(v: Tensor) -> Tensor:
        with torch.enable_grad():
            parts = torch.autograd.grad(gradient, inputs, grad_outputs=v.to(gradient), retain_graph=True,
                                        allow_unused=True)
        return join([torch.zeros_like(x).reshape(-1) if p is None else p.reshape(-1) for p, x in zip(parts, inputs)])

    return hvp


LANCZOS_WHICH = ("LA", "SA", "LM")


class Eigenpairs(NamedTuple):
    """k Hessian eigenvalues and unit eigenvectors (columns, flattened in parameter order)."""

    values: Tensor  # (k,)
    vectors: Tensor  # (D, k)
    iterations: int  # Hessian-vector products used
    notes: tuple[str, ...] = ()  # what hessian_top_k left out of the symmetry and why (frozen parameters)


def lanczos(matvec: Callable[[Tensor], Tensor], D: int, k: int = 6, which: str = "LA", tol: float = 0.0,
            seed: int = 0, max_iter: int | None = None, dtype: torch.dtype = torch.float64,
            device: torch.device | str = "cpu", deflate: Tensor | None = None) -> Eigenpairs:
    """k extreme eigenpairs of a symmetric operator given by ``matvec`` (Lanczos, full reorthogonalisation).

    Stops when every wanted Ritz value θᵢ has an estimated error min(rᵢ, rᵢ²/gapᵢ) ≤ tol·|θᵢ| (rᵢ the
    Ritz residual ‖Hy − θy‖, gapᵢ the distance to the other Ritz values), or the Krylov space is
    exhausted; ``tol=0`` asks for machine precision. From one start vector (``seed``) Lanczos sees one
    copy of a repeated eigenvalue, and a new random direction only when the space closes.

    ``deflate``: a (D, r) matrix of orthonormal columns C; Lanczos then runs in their orthogonal complement
    (every vector projected by I − CCᵀ), on the operator compressed to it, of dimension D − r.
    """
    check_choice("which", which, LANCZOS_WHICH)
    r = 0 if deflate is None else deflate.shape[1]
    if deflate is not None:
        if deflate.ndim != 2 or deflate.shape[0] != D:
            raise ValueError(f"deflate must be a (D={D}, r) matrix of orthonormal columns, got shape {tuple(deflate.shape)}")
        C = deflate.to(device=device, dtype=dtype)
    if not (isinstance(k, int) and 1 <= k <= D - r):
        raise ValueError(f"k={k!r} must be an integer with 1 <= k <= D={D}" + (f" − {r} deflated" if r else ""))
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise ValueError(f"tol={tol!r} must be a non-negative number (0: machine precision)")
    limit = D - r if max_iter is None else min(D - r, max_iter)
    if limit < k:
        raise ValueError(f"max_iter={max_iter!r} must be at least k={k}")
    generator = torch.Generator().manual_seed(seed)
    eps = torch.finfo(dtype).eps
    threshold = max(float(tol), 8 * eps)

    def project(v: Tensor) -> Tensor:
        return v if deflate is None else v - C @ (C.mT @ v)

    def random_unit() -> Tensor:
        q = project(torch.randn(D, generator=generator, dtype=torch.float64).to(device, dtype))
        return q / q.norm()

    basis = torch.empty(min(limit, max(2 * k + 20, 64)), D, dtype=dtype, device=device)  # grows on demand
    alphas: list[float] = []
    betas: list[float] = []  # betas[j] couples q_j and q_{j+1}
    q = random_unit()
    for j in range(limit):
        if j == basis.shape[0]:
            basis = torch.cat([basis, torch.empty(min(limit, 2 * j) - j, D, dtype=dtype, device=device)])
        basis[j] = q
        w = project(matvec(q).to(dtype).reshape(-1))
        alphas.append(float(w @ q))
        Q = basis[: j + 1]
        for _ in range(2):  # classical Gram–Schmidt twice: orthogonal to working precision
            w = project(w - Q.mT @ (Q @ w))
        beta = float(w.norm())
        T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if j:
            off = torch.tensor(betas, dtype=torch.float64)
            T += torch.diag(off, 1) + torch.diag(off, -1)
        theta, S = torch.linalg.eigh(T)
        scale = float(theta.abs().max()) or 1.0
        closed = beta <= 1e3 * eps * scale  # an invariant subspace: the residuals vanish
        if j + 1 >= k:
            order = _ritz_order(theta, which)[:k]
            residual = (beta * S[-1, order]).abs()
            others = (theta[order, None] - theta[None, :]).abs()
            others[torch.arange(k), order] = math.inf
            gap = others.min(dim=1).values  # inf while θᵢ is the only Ritz value: then the residual alone
            error = torch.where(torch.isfinite(gap), torch.minimum(residual, residual ** 2 / gap), residual)
            if bool((error <= threshold * theta[order].abs().clamp_min(eps * scale)).all()) or j + 1 == limit:
                if j + 1 == limit and j + 1 < D - r and not bool((error <= threshold * theta[order].abs()).all()):
                    raise RuntimeError(f"Lanczos did not reach tol={tol:g} in max_iter={limit} iterations "
                                       f"(estimated relative errors up to {float((error / theta[order].abs()).max()):.2g}); "
                                       f"raise max_iter or tol")
                vectors = (Q.mT @ S[:, order].to(dtype))
                return Eigenpairs(theta[order].to(dtype), vectors / vectors.norm(dim=0), j + 1)
        if closed:  # restart in the orthogonal complement: a block of T with no coupling
            betas.append(0.0)
            w = random_unit()
            for _ in range(2):
                w = project(w - Q.mT @ (Q @ w))
            q = w / w.norm()
        else:
            betas.append(beta)
            q = w / beta
    raise AssertionError("unreachable: the loop returns at j + 1 == limit")


def _ritz_order(theta: Tensor, which: str) -> Tensor:
    if which == "LA":
        return torch.argsort(theta, descending=True)
    if which == "SA":
        return torch.argsort(theta)
    return torch.argsort(theta.abs(), descending=True)


def top_hessian_eigenvalues(loss_fn: LossFn, params: Params, k: int = 6, which: str = "LA",
                            seed: int = 0, tol: float = 0.0, return_eigenvectors: bool = False,
                            max_iter: int | None = None, symmetry=None):
    """k extreme Hessian eigenvalues by [`lanczos`][] on Hessian-vector products.

    ``which``: "LA" largest algebraic, "SA" smallest, "LM" largest magnitude. The start
    vector comes from ``seed`` so the result is deterministic. Returned descending for
    "LA"/"LM", ascending for "SA"; with ``return_eigenvectors`` an [`Eigenpairs`][]. ``symmetry``: a paper
    group bound to the tuple model ([`symmetry.groups.paper`][]) or any Symmetry acting on the tuple; its orbit's
    tangents are deflated, as in [`hessian_top_k`][].
    """
    check_choice("which", which, LANCZOS_WHICH)
    params = check_params("params", params)
    D = sum(p.numel() for p in params)
    if not (isinstance(k, int) and 1 <= k < D):
        raise ValueError(f"k={k!r} must be an integer with 1 <= k < D={D} (use hessian_eigenvalues for all)")
    deflate = None if symmetry is None else orbit_tangents(symmetry, tuple(p.detach() for p in params))
    result = lanczos(hessian_vector_product(loss_fn, params), D, k, which, tol, seed, max_iter,
                     params[0].dtype, params[0].device, deflate)
    return result if return_eigenvectors else result.values


def lambda_max(loss_fn: LossFn, params: Params, seed: int = 0) -> float:
    """λ_max, the Hessian's largest (algebraic) eigenvalue at ``params``: [`top_hessian_eigenvalues`][] with
    k = 1 (Lanczos from the start vector of ``seed``), the parameters detached first. The one λ_max of the
    library: ``symmetry.teleport.lambda_max`` and the figure scripts call this."""
    return float(top_hessian_eigenvalues(loss_fn, tuple(p.detach() for p in params), k=1, seed=seed)[0])


Batch = tuple[Tensor, Tensor]


def _batches(data) -> tuple[Iterable[Batch], bool]:
    """(batches, single): one (X, Y) pair, or a re-iterable collection of pairs."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        return [(data[0], data[1])], True
    if isinstance(data, Tensor) or iter(data) is data:
        raise TypeError("data must be a pair (X, Y) of tensors or a re-iterable collection of (X, Y) batches "
                        f"(a list, a DataLoader), got {type(data).__name__}"
                        + (" (a one-shot iterator: Lanczos passes over the data once per product)"
                           if not isinstance(data, Tensor) else ""))
    return data, False


def module_hessian_vector_product(model: torch.nn.Module, loss: Callable[[Tensor, Tensor], Tensor], data,
                                  batch_weight: str = "size") -> tuple[Callable[[Tensor], Tensor], list[str]]:
    """(v ↦ H v, parameter names) for L(θ) = Σ_b w_b loss(model(X_b), Y_b) over the trainable parameters.

    ``data``: a pair (X, Y), or a re-iterable collection of batches summed exactly (every batch in every
    product). ``batch_weight="size"``: w_b = |batch b| / |data|, so a mean-reduced loss gives the Hessian of
    the mean over all the data; ``"one"``: w_b = 1 (a sum-reduced loss gives the Hessian of the total).
    Reverse-over-reverse: one batch's gradient graph is kept (a single pair: built once for all products).
    The module runs as it is: call ``model.eval()`` first for dropout or batch norm in inference mode. Its buffers
    are left as found: every evaluation runs on copies of them (batch norm in training mode would otherwise update
    its running statistics at each product).
    """
    check_choice("batch_weight", batch_weight, ("size", "one"))
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameters (requires_grad=True)")
    names, params = [n for n, _ in named], [p for _, p in named]
    for name, p in named:
        if not p.is_floating_point():
            raise TypeError(f"parameter {name} has dtype {p.dtype}; the Hessian needs floating-point parameters")
    batches, single = _batches(data)

    everything = dict(model.named_parameters())
    buffers = dict(model.named_buffers())

    def forward(X: Tensor) -> Tensor:  # the model's own parameters (for autograd), copies of its buffers
        with math_attention():  # the graph is differentiated twice: attention on its math backend
            return torch.func.functional_call(model, {**everything, **{n: b.clone() for n, b in buffers.items()}}, (X,))

    def weighted_gradient(X: Tensor, Y: Tensor, weight: float) -> Tensor:
        with torch.enable_grad():
            value = loss(forward(X), Y)
            if value.ndim != 0:
                raise ValueError(f"loss must return a scalar, got shape {tuple(value.shape)} (reduction='none'?)")
            grads = torch.autograd.grad(weight * value, params, create_graph=True, allow_unused=True)
        return torch.cat([torch.zeros_like(p).reshape(-1) if g is None else g.reshape(-1) for g, p in zip(grads, params)])

    if single:
        ((X, Y),) = batches
        check_data(X, Y)  # empty or non-finite data named here, not a Hessian of zeros or a failed eigh
        return _graph_hvp(weighted_gradient(X, Y, 1.0), params, torch.cat), names
    sizes = []
    for X, Y in batches:
        check_data(X, Y)
        sizes.append(len(X))
    if not sizes:
        raise ValueError("data holds no batches")
    total = sum(sizes)

    def hvp(v: Tensor) -> Tensor:
        out = torch.zeros_like(v)
        for (X, Y), size in zip(batches, sizes, strict=True):
            out += _graph_hvp(weighted_gradient(X, Y, size / total if batch_weight == "size" else 1.0),
                              params, torch.cat)(v).to(out)
        return out

    return hvp, names


ORBIT_RTOL = 1e-10


def orbit_tangents(symmetry, params, rtol: float = ORBIT_RTOL) -> Tensor:
    """An orthonormal basis (D, r) of the tangent space of the orbit {g·θ} at θ = ``params``: the infinitesimal
    action d/dt exp(tξ)·θ at t = 0 (Eq. 9) for ξ over the coordinate basis of the symmetry's algebra, by
    forward-mode differentiation of its ``act_params``, orthonormalised by an SVD (singular values below ``rtol``
    × the largest dropped: r is the orbit's dimension, Eq. 20–22). ``params``: a dict of named tensors (a module's)
    or a tuple (a tuple model's); rows are their entries flattened in that order."""
    tensors = list(params.values()) if isinstance(params, dict) else list(params)
    zero = symmetry.algebra_zero()
    keys = list(zero)

    def moved(*xi: Tensor) -> Tensor:
        out = symmetry.act_params(params, symmetry.exp(dict(zip(keys, xi))), check=False)
        parts = out.values() if isinstance(out, dict) else out
        return torch.cat([t.reshape(-1) for t in parts])

    columns = []
    with quiet_forward_mode():
        for i, key in enumerate(keys):
            for j in range(zero[key].numel()):
                direction = [torch.zeros_like(z) for z in zero.values()]
                direction[i].view(-1)[j] = 1.0
                columns.append(jvp(moved, tuple(zero.values()), tuple(direction))[1])
    D = sum(t.numel() for t in tensors)
    if not columns:
        return torch.zeros(D, 0, dtype=tensors[0].dtype, device=tensors[0].device)
    T = torch.stack(columns, dim=1)  # (D, dim G)
    U, s, _ = torch.linalg.svd(T, full_matrices=False)
    return U[:, s > rtol * s.max()] if float(s.max()) > 0 else U[:, :0]


def hessian_top_k(model: torch.nn.Module, loss: Callable[[Tensor, Tensor], Tensor], data, k: int = 5, *,
                  which: str = "LA", tol: float = 1e-3, seed: int = 0, batch_weight: str = "size",
                  max_iter: int | None = None, symmetry=None) -> Eigenpairs:
    """Top-k Hessian eigenvalues and eigenvectors of a module's loss on data (Lanczos, see [`lanczos`][]).

    ``loss(model(X), Y)`` must be a scalar (e.g. ``torch.nn.functional.cross_entropy``); ``data`` is a pair
    (X, Y) or batches summed exactly (see [`module_hessian_vector_product`][]). Eigenvectors are the
    columns of ``.vectors``, flattened in ``named_parameters()`` order (trainable ones);
    [`eigenvector_parameters`][] reshapes one into a name → tensor dict.

    ``symmetry``: a [`symmetry.groups.Symmetry`][] of the model (e.g. ``module_symmetries(model)``). Its orbit's
    tangents ([`orbit_tangents`][]) are deflated: Lanczos runs on the Hessian compressed to their orthogonal
    complement. At a minimum the orbit lies in the minimum (Cor. 11), so H t = 0 for every tangent t and the
    complement is invariant: the result is then exactly the Hessian's eigenpairs with the symmetry's flat
    directions taken out (e.g. ``which="SA"``: the flattest directions no symmetry explains). Away from a
    critical point H t ≠ 0 in general, and the result is the compressed operator's. Frozen parameters
    (``requires_grad=False``) are no variables of this Hessian: the symmetry's blocks that move one are left out
    (``.notes`` says which), the rule of the monitor and teleport too; any other symmetry that moves one is refused.
    """
    hvp, names = module_hessian_vector_product(model, loss, data, batch_weight)
    params = [p for p in model.parameters() if p.requires_grad]
    D = sum(p.numel() for p in params)
    deflate, note = None, None
    if symmetry is not None:
        missing = [m for m in ("algebra_zero", "exp", "act_params") if not callable(getattr(symmetry, m, None))]
        if missing:
            raise TypeError(f"symmetry must follow symmetry.groups.Symmetry; {type(symmetry).__name__} lacks {missing}")
        symmetry, note = without_frozen(symmetry, model)
        deflate = _trainable_tangents(model, symmetry, names)
    result = lanczos(hvp, D, k, which, tol, seed, max_iter, params[0].dtype, params[0].device, deflate)
    return result._replace(notes=(note,)) if note else result


def _trainable_tangents(model: torch.nn.Module, symmetry, names: list[str]) -> Tensor:
    everything = {n: p.detach() for n, p in model.named_parameters()}
    T = orbit_tangents(symmetry, everything)
    start, rows, frozen = 0, [], []
    for n, p in everything.items():
        block = T[start:start + p.numel()]
        if n in names:
            rows.append(block)
        elif bool((block != 0).any()):
            frozen.append(n)
        start += p.numel()
    if frozen:
        raise ValueError(f"symmetry moves the parameters {frozen}, which are not trainable (requires_grad=False): "
                         "its orbit has no tangent in the trainable parameters' Hessian")
    # the rows of the trainable parameters are the whole tangents (the others are zero): still orthonormal
    return torch.cat(rows) if rows else T[:0]


def eigenvector_parameters(model: torch.nn.Module, vector: Tensor) -> dict[str, Tensor]:
    """One flattened eigenvector (a column of ``Eigenpairs.vectors``) as name → tensor shaped like the parameter."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    parts = unflatten(vector, tuple(p for _, p in named))
    return {n: t for (n, _), t in zip(named, parts)}
