"""Symmetry teleportation: move the parameters along a group orbit, where the loss does not change,
to the point that is best for what comes next (Zhao, Dehmamy, Walters & Yu, NeurIPS 2022;
Zhao, Gower, Walters & Yu, ICLR 2024).

The paper's conserved quantities are coordinates along the orbit (Figs. 6, 7, 9; App. G.1):
gradient flow cannot change them, a group element can. [`teleport_to`][] (also ``symmetry.teleport_to``;
this module is ``symmetry.teleport``) optimises one group element

    g = exp(ξ),  ξ ∈ Lie algebra  (matrix_exp for GL / O, entrywise exp for positive scalings),

by gradient ascent on an objective J(g·θ) and applies it. Why this parametrisation: ξ = 0 is the
identity, every ξ gives a group element of the identity component (no step can leave the group or
reach a singular matrix, which g = I + T of the reference code can), and the action is exactly
loss-preserving for every ξ, so ΔL measures only round-off (the reference code's first-order
inverse (I + T)⁻¹ ≈ I − T changes the loss at O(‖T‖²)).

Groups: any [`symmetry.groups.Symmetry`][] (teleport uses its ``algebra_zero``, ``exp``, ``act_params`` and
``describe``): a user's ``nn.Module`` with its symmetries, ``module_symmetries(model)``, passed directly; or a
tuple model with one of the paper's groups of [`symmetry.groups.paper`][], by name in ``GROUPS`` or as an
instance, bound to the model and the teleport batch by teleport (re-exported here:
[`GeneralLinear`][symmetry.groups.paper.GeneralLinear], [`PositiveScaling`][symmetry.groups.paper.PositiveScaling],
[`NonlinearGL`][symmetry.groups.paper.NonlinearGL] (Prop. 8 in the form whose identity is the identity; exact
on a batch no larger than every hidden width, ``approximate=True`` for larger ones),
[`Orthogonal`][symmetry.groups.paper.Orthogonal], [`NeuronScaling`][symmetry.groups.paper.NeuronScaling]).

Objectives: [`grad_norm`][] (maximise ‖∇L‖², NeurIPS 2022), [`sharpness`][] (minimise the top
Hessian eigenvalue, its eigenvector by [`symmetry.hessian.top_hessian_eigenvalues`][], or Hutchinson's
trace estimate, ICLR 2024), [`conserved_target`][] (reach a target value of a conserved quantity), or any
callable. [`teleport_random`][] applies a random element of a given size: the control of a teleport.

Inside training: [`TeleportingStepper`][] wraps any stepper of the engine's protocol and teleports at
the steps of a [`TeleportSchedule`][]; [`symmetry.dynamics.run`][] is the one loop that runs it.

Modules, one idea each (every public name is re-exported here, as before the split): ``objectives`` (Objective
and the objectives; ``lambda_max`` is [`symmetry.hessian.lambda_max`][]), ``problem`` (the symmetry bound to
the model and batch, the loss and its tolerances), ``element`` (a group element's condition number),
``acceptance`` (the acceptance policy: condition number, loss change, trust region; the final check and the
report), ``ascent`` (the ascent with backtracking, ``teleport_to``), ``random_teleport`` (``teleport_random``),
``stepper`` (TeleportSchedule, TeleportingStepper), ``report`` (TeleportReport).
"""
from ..groups.paper import GeneralLinear, Group, NeuronScaling, NonlinearGL, Orthogonal, PositiveScaling, make_group
from ..hessian import lambda_max
from .acceptance import AcceptancePolicy, TeleportWarning
from .ascent import Ascent, ascend, teleport_to
from .element import condition_number, shift_and_rotation_keys
from .objectives import (OBJECTIVES, Objective, _detached_leaves, conserved_target, curvature_along,  # noqa: F401
                         grad_norm, gradient_norm_squared, make_objective, sharpness)
from .problem import GROUPS, TELEPORT_NEEDS
from .random_teleport import teleport_random
from .report import TeleportReport
from .stepper import TeleportingStepper, TeleportSchedule

__all__ = ["AcceptancePolicy", "Ascent", "GROUPS", "GeneralLinear", "Group", "NeuronScaling", "NonlinearGL",
           "OBJECTIVES", "Objective", "Orthogonal", "PositiveScaling", "TELEPORT_NEEDS", "TeleportReport",
           "TeleportSchedule", "TeleportWarning", "TeleportingStepper", "ascend", "condition_number",
           "conserved_target", "curvature_along", "grad_norm", "gradient_norm_squared", "lambda_max", "make_group",
           "make_objective", "sharpness", "shift_and_rotation_keys", "teleport_random", "teleport_to"]
