"""GD on a two-layer net in fused, preallocated tensor ops: the speed path of the GD step for Figs. 3, 6, 9."""
from __future__ import annotations

from typing import Callable

import torch

from ..models import TwoLayerNet, residual_scale
from ..types import Params
from ..validation import check_params
from .state import GradFn, State, bind_in_place, check_lr, like_params, per_config, require_rest, start_state, step_clock

Tensor = torch.Tensor


class TwoLayerGD:
    """Full-batch GD on a [`TwoLayerNet`][symmetry.models.TwoLayerNet], θ ← θ − η∇L, in fused in-place tensor
    ops: the hot loop of Figs. 3, 6, 9 (per-step overhead, not arithmetic, is the cost there).

    A speed path of [`GD`][symmetry.dynamics.GD], not another method: the same step (tests: equal to θ − η∇L
    with the autograd gradient to 1e-12). It keeps its own arithmetic because the fused order (−η·scale folded
    into the residual) rounds differently from GD's θ − η·∇L, and the committed figures were made with it.

    With whitened input (X = None), exactly one batch dimension and activations that can write σ and
    σ' into preallocated buffers, every buffer and view is made once: 4 tensor ops per step (5 with one
    lr per configuration) plus 1–2 per activation, no allocation. Both gradients are linear in the
    residual, so −η·scale is folded into it once: R' = −η·scale·(F − Y), U += R'σ(Z)ᵀ, V += (R'ᵀU) ⊙ σ'(Z)ᵀ.
    Otherwise the same update with σ, σ' in one pass and in-place updates. The gradient argument of
    ``step`` is not used (the step computes its own); the step's loss is not computed.
    """

    name = "two_layer_gd"
    uses_grad = False  # steps on its own (model, X, Y): the loop refuses mini-batches for it

    def __init__(self, model: TwoLayerNet, X: Tensor | None, Y: Tensor, lr):
        if not isinstance(model, TwoLayerNet):
            raise TypeError(f"TwoLayerGD steps a TwoLayerNet, got {type(model).__name__}")
        self.model, self.X, self.Y, self.lr = model, X, Y, check_lr(lr)
        self.dt = step_clock(self.lr)

    def __repr__(self) -> str:
        return f"TwoLayerGD({self.model!r}, lr={self.lr})"

    def init_state(self, params: Params, velocity: Params | None = None) -> State:
        require_rest(self.name, velocity)
        state = start_state(params, track_velocity=False)
        check_params("params", state.params, 2)
        # the stepper steps on its own data: promoted as run() promotes its own (float32 data, float64 parameters)
        Y = like_params("Y", self.Y, state.params)
        assert Y is not None  # a tensor's promotion is a tensor
        self.X, self.Y = like_params("X", self.X, state.params), Y
        state.memory["lr"] = per_config(self.lr, state.params, "lr")
        return state

    def step(self, state: State, grad: GradFn | None = None) -> State:
        lr = state.memory["lr"]
        params = bind_in_place(state, lambda p: self._preallocated(p, lr) or (lambda: self._fused(p, lr)))
        return State(params, None, state.time + self.dt, state.step + 1, state.memory)

    def advance(self, state: State, steps: int) -> State:
        """``steps`` calls of ``step`` in one (the loop's fast path between records): the same
        in-place updates and the same clock, without a State per step."""
        new = self.step(state)
        closure, time = state.memory["closure"], new.time
        for _ in range(steps - 1):
            closure()
            time += self.dt  # added step by step, as ``step`` does: the same floating-point times
        return State(new.params, None, time, state.step + steps, state.memory)

    def _fused(self, params: Params, lr) -> None:
        U, V = params
        X, Y = self.X, self.Y
        Z = V.mT if X is None else V.mT @ X  # (..., h, k)
        S, D = self.model.activation.sigma_and_dsigma(Z)
        if U.ndim == 3 and S.ndim == 3:  # one batch dimension: bmm/baddbmm skip matmul's shape logic
            R = torch.baddbmm(Y, U, S, beta=-1)  # F − Y, (B, m, k)
            grad_U, grad_Z = torch.bmm(R, S.mT), torch.bmm(U.mT, R)
        else:
            R = (U @ S).sub_(Y)
            grad_U, grad_Z = R @ S.mT, U.mT @ R
        grad_Z.mul_(D)  # ∂L/∂Z up to the residual scale, taken before U changes
        scale = residual_scale(self.model.reduction, R)
        _descend(U, grad_U, lr, scale)
        _descend(V, grad_Z.mT if X is None else X @ grad_Z.mT, lr, scale)

    def _preallocated(self, params: Params, lr) -> Callable[[], None] | None:
        U, V = params
        Y = self.Y
        if self.X is not None or U.ndim != 3 or V.ndim != 3 or Y.shape[-2:] != (U.shape[-2], V.shape[-2]):
            return None
        act = self.model.activation
        pieces = act._slices if hasattr(act, "_slices") else [(0, U.shape[0], act)]
        if pieces is None or any(a.into is None for _, _, a in pieces):
            return None
        Z = V.mT  # a view: it follows V's in-place updates
        S, D = torch.empty_like(Z), torch.empty_like(Z)
        R = torch.empty(U.shape[0], U.shape[1], Z.shape[-1], dtype=U.dtype, device=U.device)
        step_V = torch.empty_like(V)
        for start, stop, a in pieces:
            if a.constant_dsigma:
                D[start:stop] = a.dsigma(Z[start:stop])
        parts = [(a.into, Z[start:stop], S[start:stop], D[start:stop]) for start, stop, a in pieces]
        S_T, R_T, D_T = S.mT, R.mT, D.mT
        Y = Y.expand_as(R) if Y.ndim == 2 else Y
        scale = residual_scale(self.model.reduction, R)
        per_config = isinstance(lr, Tensor)
        c = -scale * lr if per_config else -scale * float(lr)

        def step() -> None:
            for into, z, s, d in parts:
                into(z, s, d)  # type: ignore[misc]  # pieces without `into` returned None above
            if per_config:
                torch.baddbmm(Y, U, S, beta=-1, out=R).mul_(c)
            else:
                torch.baddbmm(Y, U, S, beta=-c, alpha=c, out=R)
            torch.bmm(R_T, U, out=step_V)  # (UᵀR')ᵀ with U before its update
            U.baddbmm_(R, S_T)
            V.addcmul_(step_V, D_T)
        return step


def _descend(p: Tensor, grad: Tensor, lr: Tensor | float, scale: float) -> None:
    """p ← p − lr·scale·grad in one in-place op (lr: a number or one value per configuration)."""
    if isinstance(lr, Tensor):
        p.addcmul_(lr, grad, value=-scale)
    else:
        p.add_(grad, alpha=-scale * lr)
