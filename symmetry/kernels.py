"""Compiled whole-loop GD kernels for steps whose cost is per-op overhead (optional: ``pip install .[fast]``).

The radial net of Fig. 7 (m=5, n=10, h=5, four configurations) takes about 10⁴ flops per
batched step: torch spends ~40 µs per step on dispatching its ~20 small ops, a compiled loop
~2 µs on the arithmetic. The torch step (:meth:`symmetry.TwoLayerRadialNet.descent_step`)
stays the reference and the path on CUDA; the kernel here repeats its arithmetic in the same
order (tests: equal to 1e-12 in float64, to 1e-6 relative in float32 over 1000 steps; BLAS
sums in a different order, so float32 results are not bit-identical).

Hook for the dynamics engine: :func:`radial_stepper` returns a callable that advances the
parameters in place by one GD step, or ``None`` where the kernel does not apply (then use the
torch step). ``stepper.advance(k)`` runs k steps in one call (no Python per step).
"""
from __future__ import annotations

import re
import sys
from typing import Callable

import numpy as np
import torch

Tensor = torch.Tensor

_compiled: dict[str, Callable] = {}
_announced = False


def numba_available() -> bool:
    """True if numba imports (the ``fast`` extra)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _announce_fallback(what: str) -> None:
    global _announced
    if not _announced:
        print(f"note: numba is not installed, so {what} runs the torch step "
              f"(same numbers, slower; `pip install .[fast]` adds the compiled kernel)", file=sys.stderr)
        _announced = True


def _radial_kernel() -> Callable:
    """Build (once) the numba kernel: ``steps`` GD steps of F = U g(Vᵀ), g(z) = z/‖z‖² per row, in place."""
    if "radial" in _compiled:
        return _compiled["radial"]
    import numba

    @numba.njit(cache=True, nogil=True)
    def radial_gd(U, V, Y, lr, scale, one, steps):  # pragma: no cover (compiled)
        # U (B, m, h), V (B, n, h), Y (m, n), lr (B,); the scalars carry the arrays' dtype so that
        # float32 arithmetic stays in float32. Order of operations as in TwoLayerRadialNet.loss_and_grad.
        B, m, h = U.shape
        n = V.shape[1]
        inv_r2 = np.empty(h, U.dtype)
        S = np.empty((h, n), U.dtype)
        G = np.empty((m, n), U.dtype)
        gU = np.empty((m, h), U.dtype)
        gZ = np.empty((h, n), U.dtype)
        for _ in range(steps):
            for b in range(B):
                for i in range(h):  # Z = Vᵀ: row i of Z is column i of V
                    s = V[b, 0, i] * V[b, 0, i]
                    for j in range(1, n):
                        s += V[b, j, i] * V[b, j, i]
                    inv_r2[i] = one / s
                    for j in range(n):
                        S[i, j] = V[b, j, i] * inv_r2[i]
                for a in range(m):  # G = scale (U S − Y)
                    for j in range(n):
                        f = U[b, a, 0] * S[0, j]
                        for i in range(1, h):
                            f += U[b, a, i] * S[i, j]
                        G[a, j] = scale * (f - Y[a, j])
                for i in range(h):
                    c = V[b, 0, i] * 0
                    for j in range(n):  # grad_S = Uᵀ G, then c_i = ⟨z_i, grad_S_i⟩
                        gs = U[b, 0, i] * G[0, j]
                        for a in range(1, m):
                            gs += U[b, a, i] * G[a, j]
                        gZ[i, j] = gs
                        c += V[b, j, i] * gs
                    r4 = inv_r2[i] * inv_r2[i]
                    for j in range(n):  # grad_Z = grad_S/r² − 2 z r⁻⁴ ⟨z, grad_S⟩
                        z = V[b, j, i]
                        gZ[i, j] = gZ[i, j] * inv_r2[i] - (z + z) * r4 * c
                for a in range(m):  # grad_U = G Sᵀ (with U before its update)
                    for i in range(h):
                        g = G[a, 0] * S[i, 0]
                        for j in range(1, n):
                            g += G[a, j] * S[i, j]
                        gU[a, i] = g
                for a in range(m):
                    for i in range(h):
                        U[b, a, i] -= lr[b] * gU[a, i]
                for j in range(n):
                    for i in range(h):
                        V[b, j, i] -= lr[b] * gZ[i, j]

    _compiled["radial"] = radial_gd
    return radial_gd


class RadialStepper:
    """GD on ``TwoLayerRadialNet`` (f(r) = r⁻², per-neuron, whitened input) by the compiled kernel.

    Works on numpy views of the parameter tensors: ``params`` change in place, as with the torch step.
    """

    def __init__(self, params: tuple[Tensor, Tensor], Y: Tensor, lr, scale: float):
        U, V = params
        if U.ndim == 2:  # one configuration: a batch of one, sharing memory
            U, V = U.unsqueeze(0), V.unsqueeze(0)
        self._U, self._V = U.numpy(), V.numpy()  # views: the kernel writes into the tensors
        dtype = self._U.dtype.type
        self._Y = np.ascontiguousarray(Y.detach().numpy(), dtype=self._U.dtype)
        # lr and the residual scale rounded to the training dtype, as torch does with a Python scalar
        lr_values = lr.reshape(-1).tolist() if isinstance(lr, Tensor) else [float(lr)] * self._U.shape[0]
        self._lr = np.asarray(lr_values, dtype=self._U.dtype)
        self._scale, self._one = dtype(scale), dtype(1)
        self._kernel = _radial_kernel()

    def advance(self, steps: int) -> None:
        """``steps`` GD steps in one compiled call."""
        self._kernel(self._U, self._V, self._Y, self._lr, self._scale, self._one, steps)

    def __call__(self) -> None:
        self.advance(1)


def radial_stepper(model, params: tuple[Tensor, ...], X: Tensor | None, Y: Tensor, lr) -> RadialStepper | None:
    """The compiled GD step for ``model`` at ``params`` (updated in place), or ``None`` where it does not
    apply: CUDA tensors, input data X, another f or axis, a dtype other than float32/float64, or numba
    missing (then one line on stderr says so). ``lr``: a number or one value per configuration."""
    from .activations import inverse_square
    from .models import _residual_scale

    U, V = params
    applies = (X is None and getattr(model, "f", None) is inverse_square and getattr(model, "over", None) == "neuron"
               and U.device.type == "cpu" and V.device == U.device and U.dtype == V.dtype
               and U.dtype in (torch.float32, torch.float64) and U.ndim == V.ndim and U.ndim in (2, 3)
               and U.is_contiguous() and V.is_contiguous() and not U.requires_grad and not V.requires_grad)
    if not applies:
        return None
    if not numba_available():
        _announce_fallback("the radial GD step")
        return None
    F_shape = (U.shape[-2], V.shape[-2])
    scale = _residual_scale(model.reduction, torch.empty(F_shape))
    return RadialStepper((U, V), Y, lr, scale)


class CompiledRadialGD:
    """A stepper of the engine (:class:`symmetry.dynamics.Stepper`): ``every`` GD steps on a
    ``TwoLayerRadialNet`` per ``step`` call, in one compiled call (:func:`radial_stepper`). The loop's
    step counts are then in units of ``every``; :func:`compiled_gradient_descent` rescales them.
    Parameters replaced between steps (a wrapper) are rebound, as in ``dynamics.TwoLayerGD``."""

    name = "compiled_radial_gd"
    uses_grad = False  # steps on its own (model, Y): no mini-batches

    def __init__(self, model, X: Tensor | None, Y: Tensor, lr, every: int = 1):
        self.model, self.X, self.Y, self.lr, self.every = model, X, Y, lr, every
        self.dt = every * float(lr) if not isinstance(lr, Tensor) else float(every)

    def init_state(self, params, velocity=None):
        from .dynamics import State

        return State(tuple(p.detach().clone().contiguous() for p in params), None)

    def step(self, state, grad=None):
        from .dynamics import State

        if state.memory.get("bound") is not state.params:  # first step, or parameters replaced: (re)bind
            params = tuple(p.detach().clone().contiguous() for p in state.params)
            stepper = radial_stepper(self.model, params, self.X, self.Y, self.lr)
            if stepper is None:  # decided before the loop started; the parameters cannot have changed kind
                raise RuntimeError("the compiled radial step stopped applying")
            state.memory.update(bound=params, stepper=stepper)
        state.memory["stepper"].advance(self.every)
        return State(state.memory["bound"], None, state.time + self.dt, state.step + 1, state.memory)


def compiled_gradient_descent(model, params, X: Tensor | None, Y: Tensor, lr, steps: int, *, record_every: int = 1,
                              **options):
    """``symmetry.gradient_descent`` with the compiled step where it applies (see :func:`radial_stepper`):
    the engine's loop (``dynamics.run``) with :class:`CompiledRadialGD`, one compiled call per recorded
    interval, and the same Trajectory (step numbers, loss and observables at the same steps); ``None``
    where the kernel does not apply or ``steps`` is not a multiple of ``record_every`` (then run the torch loop)."""
    from .dynamics import DivergenceError, run

    probe = tuple(p.detach().clone() for p in params)
    if steps % record_every or radial_stepper(model, probe, X, Y, lr) is None:
        return None
    try:
        trajectory = run(model, params, X, Y, CompiledRadialGD(model, X, Y, lr, record_every), steps // record_every,
                         record_every=1, **options)
    except DivergenceError as error:  # the loop counted blocks of record_every steps: name the GD step
        raise DivergenceError(re.sub(r"at step (\d+)", lambda m: f"by GD step {int(m.group(1)) * record_every}",
                                     str(error))) from None
    trajectory.times = trajectory.times * record_every
    return trajectory
