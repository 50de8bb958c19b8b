"""The one dynamics engine: how a step is taken, how a run is recorded, how a flow is integrated.

Three pieces serve every figure, notebook and extension:

- **Steppers** ([`Stepper`][]): one discrete method each. ``state = stepper.init_state(params)``,
  then ``state = stepper.step(state, grad)`` with ``grad(params) -> (loss, gradient tuple)``.
  Built in: [`SGD`][] (exactly ``torch.optim.SGD``: momentum, dampening, Nesterov, coupled
  weight decay; [`GD`][] is its plain case), [`Adam`][] / [`AdamW`][] (coupled / decoupled
  weight decay, exactly ``torch.optim.Adam`` / ``AdamW``), [`AdaGrad`][] (``torch.optim.Adagrad``),
  Gluch & Urbanke's [`HeavyBall`][], [`Leapfrog`][] and [`Nesterov`][] (discretisations of
  ND and NAGF), [`wrap_optimizer`][] for any ``torch.optim.Optimizer``; and two speed paths of [`GD`][]'s
  step, [`TwoLayerGD`][] (GD on [`TwoLayerNet`][] in fused, preallocated tensor ops: the hot loop of
  Figs. 3, 6, 9) and [`CompiledGD`][] (numba kernels for Fig. 7's models).
- **One loop**, [`run`][]: a stepper on a model for a number of steps, all configurations of a
  batched run at once, observables recorded every k steps, divergence reported by configuration.
  [`gradient_descent`][] is its full-batch GD case (Fig. 3's fast step where it applies).
- **One ODE integrator**, [`integrate`][]: θ̈ + b(t)θ̇ = −∇L in float64 by scipy's DOP853, for
  gradient flow (first order, Eq. 23 / G&U Eq. 27), Newtonian dynamics (b = 0) and Nesterov's
  accelerated flow (b = 3/t). [`gradient_flow`][] is its GF case.

Models: a tuple model of [`symmetry.models`][] (loss a pure function of a parameter tuple), or any
``torch.nn.Module`` through [`ModuleModel`][] (``torch.func.functional_call``, a loss function).

Observables everywhere are functions of a [`Snapshot`][] (``.params``, ``.velocity``, ``.time``,
``.step``, ``.loss``, ``.integrals``): ``{"Q": lambda s: conserved_Q(s.params, "tanh")}``.

Gradients: ``model.loss_and_grad`` — the closed form where a model has one (two-layer nets), else
plain reverse-mode autograd ([`symmetry.models.Model.loss_and_grad`][]; less time per call than
``torch.func.grad`` on G&U's small problems, measured by benchmarks/bench_grad.py), which falls back to
``torch.func.grad`` inside a ``torch.func`` transform so that a step can still be nested (vmap, jacrev of a step).

Replacing the parameters between steps (teleportation): a wrapper may hand ``step`` a state whose
``params`` it replaced, ``dataclasses.replace(state, params=new)`` (same shapes and dtype). Every
stepper takes the new parameters as they are; its optimizer memory (momentum buffer, Adam's moments
and step count, AdaGrad's sum, the previous iterate of heavy ball / Nesterov, a wrapped optimizer's
``state``) is kept unchanged, not transported by the group action: the next step combines the new
point with the old memory. A wrapper that wants fresh memory calls ``init_state(new)`` instead.

Modules, one idea each (every public name is re-exported here, and as before as ``symmetry.NAME``):
``records`` (Snapshot, Trajectory, the recorder), ``module_model`` (ModuleModel, ``gradient_fn``),
``state`` (State, the Stepper protocol and the helpers every stepper shares), ``steppers`` (the discrete
methods), ``fused`` (TwoLayerGD), ``compiled`` (numba kernels; formerly ``symmetry.kernels``), ``loop``
(``run``, ``gradient_descent``), ``ode`` (``integrate``, ``gradient_flow``, ``friction``).
"""
from .compiled import CompiledGD, compiled_gradient_descent, compiled_stepper
from .fused import TwoLayerGD
from .loop import gradient_descent, run
from .module_model import ModuleModel, gradient_fn
from .ode import DYNAMICS, friction, gradient_flow, integrate
from .records import Integrand, Observable, Snapshot, Trajectory
from .state import GradFn, State, Stepper, bind_in_place
from .steppers import (GD, SGD, STEPPERS, AdaGrad, Adam, AdamW, HeavyBall, Leapfrog, Nesterov, TorchOptimizer,
                       make_stepper, wrap_optimizer)
from ..errors import DivergenceError, NotSupportedError  # noqa: F401  (as before the split: symmetry.dynamics.DivergenceError)

__all__ = [
    # records
    "Snapshot", "Trajectory", "Observable", "Integrand",
    # models
    "ModuleModel", "gradient_fn",
    # the stepper protocol
    "State", "Stepper", "GradFn", "bind_in_place",
    # steppers
    "SGD", "GD", "Adam", "AdamW", "AdaGrad", "HeavyBall", "Leapfrog", "Nesterov", "TorchOptimizer", "wrap_optimizer",
    "STEPPERS", "make_stepper",
    # the speed paths of GD
    "TwoLayerGD", "CompiledGD", "compiled_stepper", "compiled_gradient_descent",
    # the loop and the ODE integrator
    "run", "gradient_descent", "DYNAMICS", "friction", "integrate", "gradient_flow",
]
