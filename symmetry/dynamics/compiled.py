"""Compiled whole-loop GD kernels for steps whose cost is per-op overhead (optional: ``pip install .[fast]``).

Fig. 7's models are tiny: the radial net (m=5, n=10, h=5, four configurations) takes about 10⁴
flops per batched step and Prop. 14's decoupled per-mode system ([`symmetry.models.SpectralModes`][])
20 scalars. torch spends ~40 µs per step dispatching ~20 small ops; a compiled loop spends ~2 µs
(radial) or a few ns (modes) on the arithmetic. The torch steps (the engine's ``GD`` on the model's
closed-form ``loss_and_grad``) stay the reference and the path on CUDA; each kernel repeats their
arithmetic in the same order (tests: equal to 1e-12 in float64, to 1e-6 relative in float32 over
1000 steps; BLAS sums in another order, so float32 results are not bit-identical).

One entry point over a registry, [`KERNELS`][] (model class → builder): [`compiled_stepper`][]
returns an object whose ``advance(k)`` runs k GD steps in place in one compiled call, or ``None``
where no kernel applies (then use the torch step). [`CompiledGD`][] makes it a stepper of the
engine, [`compiled_gradient_descent`][] the compiled twin of ``symmetry.gradient_descent``.
Formerly ``symmetry.kernels``, which still names this module.
"""
from __future__ import annotations

import contextlib
import re
import signal
import sys
import threading
from typing import Callable, Iterator

import numpy as np
import torch

from ..activations import inverse_square
from ..errors import DivergenceError
from ..models import SpectralModes, TwoLayerRadialNet, residual_scale
from .loop import run
from .state import State, bind_in_place, require_rest, start_state

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


def _njit(fn: Callable) -> Callable:
    """numba.njit with its on-disk cache; where numba finds no writable cache directory (a read-only checkout with
    a read-only HOME: "no locator available") the kernel compiles without one, said in one line."""
    import numba

    try:
        return numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError as error:
        if "cannot cache" not in str(error):
            raise
        print(f"note: numba has no writable cache directory ({str(error).splitlines()[0][:120]}); compiling "
              f"{fn.__name__} without a cache (each run compiles it again)", file=sys.stderr)
        return numba.njit(cache=False, nogil=True)(fn)


def _radial_kernel() -> Callable:
    """Build (once) the numba kernel: ``steps`` GD steps of F = U g(Vᵀ), g(z) = z/‖z‖² per row, in place."""
    if "radial" in _compiled:
        return _compiled["radial"]

    @_njit
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


def _modes_kernel() -> Callable:
    """Build (once) the numba kernel: ``steps`` GD steps of Prop. 14's per-mode system, in place."""
    if "modes" in _compiled:
        return _compiled["modes"]

    @_njit
    def modes_gd(u, v, y, lr, c, steps):  # pragma: no cover (compiled)
        # u, v, y, lr: one entry per (configuration, mode), flattened; c = −2·scale in the arrays' dtype.
        # The modes do not interact, so each runs all its steps in registers. Order of operations as in
        # SpectralModes.loss_and_grad and GD: q = u/v, r = y − q, g = (c·r)/v, u ← u − η·g, v ← v − η·(−g·q).
        for k in range(u.shape[0]):
            uk, vk, yk, eta = u[k], v[k], y[k], lr[k]
            for _ in range(steps):
                q = uk / vk
                g = c * (yk - q) / vk
                uk = uk - eta * g
                vk = vk - eta * (-g * q)
            u[k], v[k] = uk, vk

    _compiled["modes"] = modes_gd
    return modes_gd


@contextlib.contextmanager
def interrupt_after() -> Iterator[None]:
    """Hold SIGINT (Ctrl-C) until the block ends, then deliver it to the handler it was meant for.

    The first call of a numba kernel loads it from numba's cache through llvmlite's ctypes callbacks;
    a KeyboardInterrupt raised inside one is printed as "Exception ignored on calling ctypes callback
    function" and lost, and the run went on to its end (tests/symmetry/dynamics/test_dynamics_compiled.py shows it). A compiled
    call does not see signals before it returns anyway. Only the main thread receives signals, so
    elsewhere, or with a handler that is not a Python function, the block runs as it is.
    """
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield
        return
    pending: list = []
    signal.signal(signal.SIGINT, lambda signum, frame: pending.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending:
            previous(*pending[0])


class CompiledSteps:
    """GD steps of one model by a compiled kernel, on numpy views of the parameter tensors: ``params``
    change in place, as with the torch step. ``advance(k)``: k steps in one call; calling it: one step."""

    def __init__(self, kernel: Callable, arrays: tuple, constants: tuple):
        self._kernel, self._arrays, self._constants = kernel, arrays, constants

    def advance(self, steps: int) -> None:
        """``steps`` GD steps in one compiled call (a Ctrl-C during it is delivered when it returns)."""
        with interrupt_after():
            self._kernel(*self._arrays, *self._constants, steps)

    def __call__(self) -> None:
        self.advance(1)


def _learning_rates(lr, batch: int, dtype) -> np.ndarray:
    """One lr per configuration, rounded to the training dtype as torch rounds a Python scalar."""
    values = lr.reshape(-1).tolist() if isinstance(lr, Tensor) else [float(lr)] * batch
    if len(values) != batch:
        raise ValueError(f"lr has {len(values)} values for {batch} configurations")
    return np.asarray(values, dtype=dtype)


def _radial(model, params: tuple[Tensor, ...], X: Tensor | None, Y: Tensor, lr) -> CompiledSteps | None:
    """GD on ``TwoLayerRadialNet`` with f(r) = r⁻² per neuron and whitened input (Fig. 7's model)."""
    U, V = params
    if not (X is None and model.f is inverse_square and model.over == "neuron" and U.ndim == V.ndim
            and U.ndim in (2, 3)):
        return None
    if U.ndim == 2:  # one configuration: a batch of one, sharing memory
        U, V = U.unsqueeze(0), V.unsqueeze(0)
    U_np, V_np = U.numpy(), V.numpy()  # views: the kernel writes into the tensors
    dtype = U_np.dtype.type
    Y_np = np.ascontiguousarray(Y.detach().numpy(), dtype=U_np.dtype)
    scale = residual_scale(model.reduction, torch.empty(U.shape[-2], V.shape[-2]))
    return CompiledSteps(_radial_kernel(), (U_np, V_np, Y_np, _learning_rates(lr, U.shape[0], U_np.dtype)),
                         (dtype(scale), dtype(1)))


def _spectral_modes(model, params: tuple[Tensor, ...], X: Tensor | None, Y: Tensor, lr) -> CompiledSteps | None:
    """GD on ``SpectralModes`` (Prop. 14's decoupled per-mode system)."""
    u, v = params
    if X is not None or u.shape != v.shape or u.ndim < 2:
        return None
    try:
        targets = torch.broadcast_to(Y.detach().to(u.dtype), u.shape)
    except RuntimeError:
        return None
    batch = u.shape[:-2]
    lr_full = (torch.broadcast_to(lr.detach().to(u.dtype).reshape(*batch, 1, 1), u.shape)
               if isinstance(lr, Tensor) else torch.full(u.shape, float(lr), dtype=u.dtype))
    dtype = u.numpy().dtype.type
    arrays = (u.view(-1).numpy(), v.view(-1).numpy(),  # views: the kernel writes into the tensors
              np.ascontiguousarray(targets.reshape(-1).numpy()), np.ascontiguousarray(lr_full.reshape(-1).numpy()))
    return CompiledSteps(_modes_kernel(), arrays, (dtype(-2 * model.scale),))


KERNELS: dict[type, Callable] = {TwoLayerRadialNet: _radial, SpectralModes: _spectral_modes}
"""Model class → builder ``(model, params, X, Y, lr) -> CompiledSteps | None``."""


def compiled_stepper(model, params: tuple[Tensor, ...], X: Tensor | None, Y: Tensor, lr) -> CompiledSteps | None:
    """The compiled GD steps for ``model`` at ``params`` (updated in place), or ``None`` where no kernel
    applies: a model class not in [`KERNELS`][], CUDA tensors, input data X the kernel does not take,
    a dtype other than float32/float64, non-contiguous or grad-requiring parameters, or numba missing
    (then one line on stderr says so, once). ``lr``: a number or one value per configuration."""
    build = KERNELS.get(type(model))
    if build is None or len(params) != 2:
        return None
    a, b = params
    if not (a.device.type == "cpu" and b.device == a.device and a.dtype == b.dtype
            and a.dtype in (torch.float32, torch.float64) and a.is_contiguous() and b.is_contiguous()
            and not a.requires_grad and not b.requires_grad):
        return None
    if not numba_available():
        _announce_fallback(f"GD on {type(model).__name__}")
        return None
    return build(model, params, X, Y, lr)


class CompiledGD:
    """A stepper of the engine ([`symmetry.dynamics.Stepper`][]): ``every`` GD steps per ``step`` call,
    in one compiled call ([`compiled_stepper`][]). The loop's step counts are then in units of
    ``every``; [`compiled_gradient_descent`][] rescales them. Parameters replaced between steps (a
    wrapper) are rebound, as in [`TwoLayerGD`][symmetry.dynamics.TwoLayerGD].

    A speed path of [`GD`][symmetry.dynamics.GD], not another method: each kernel repeats the torch step's
    arithmetic in numba (the module docstring says to what precision they agree)."""

    name = "compiled_gd"
    uses_grad = False  # steps on its own (model, X, Y): no mini-batches

    def __init__(self, model, X: Tensor | None, Y: Tensor, lr, every: int = 1):
        self.model, self.X, self.Y, self.lr, self.every = model, X, Y, lr, every
        self.dt = every * float(lr) if not isinstance(lr, Tensor) else float(every)

    def __repr__(self) -> str:
        return f"CompiledGD({self.model!r}, lr={self.lr}, every={self.every})"

    def init_state(self, params, velocity=None):
        require_rest(self.name, velocity)
        return start_state(tuple(p.contiguous() for p in params), track_velocity=False)

    def step(self, state, grad=None):
        def make(params):
            steps = compiled_stepper(self.model, params, self.X, self.Y, self.lr)
            if steps is None:  # decided before the loop started; the parameters cannot have changed kind
                raise RuntimeError("the compiled GD step stopped applying")
            return lambda: steps.advance(self.every)

        params = bind_in_place(state, make, contiguous=True)
        return State(params, None, state.time + self.dt, state.step + 1, state.memory)


def compiled_gradient_descent(model, params, X: Tensor | None, Y: Tensor, lr, steps: int, *, record_every: int = 1,
                              **options):
    """[`gradient_descent`][symmetry.dynamics.gradient_descent] with the compiled step where it applies (see
    [`compiled_stepper`][]): the engine's loop ([`run`][symmetry.dynamics.run]) with [`CompiledGD`][], one compiled
    call per recorded
    interval, and the same Trajectory (step numbers, loss and observables at the same steps); ``None``
    where no kernel applies or ``steps`` is not a multiple of ``record_every`` (then run the torch loop)."""
    probe = tuple(p.detach().clone().contiguous() for p in params)
    if steps % record_every or compiled_stepper(model, probe, X, Y, lr) is None:
        return None
    try:
        trajectory = run(model, params, X, Y, CompiledGD(model, X, Y, lr, record_every), steps // record_every,
                         record_every=1, **options)
    except DivergenceError as error:  # the loop counted blocks of record_every steps: name the GD step
        raise DivergenceError(re.sub(r"at step (\d+)", lambda m: f"by GD step {int(m.group(1)) * record_every}",
                                     str(error))) from None
    trajectory.times = trajectory.times * record_every
    return trajectory
