"""Symmetries, flat minima and the conserved quantities of gradient flow (Zhao et al., ICLR 2023).

Modules, each named for the paper's object it holds:

- ``activations``: the one table of σ, σ', ∫σ/σ' (Eq. 48); radial rescaling (Example 5)
- ``models``: two-layer elementwise and radial nets, bias-free MLP; losses as pure functions
- ``actions``: group actions on parameters (App. B), infinitesimal actions, orbits, Prop. 8
- ``conserved``: Q (Eq. 48), imbalance matrices (Examples 7, 9), Q_M (Prop. 12), λ_i (Prop. 15)
- ``dynamics``: batched gradient descent and gradient flow (ODE solver)
- ``hessian``: exact Hessian, eigenvalues, Lanczos top-k
- ``init``: Gaussian, Xavier (Eq. 46), spectral (Prop. 14), init at a chosen Q

Only torch is imported here; scipy, tqdm and matplotlib load when a function needs them.
"""
from . import actions, activations, conserved, dynamics, hessian, init, models
from .actions import (
    RankDeficiencyWarning,
    infinitesimal_action,
    linear_action,
    linear_infinitesimal_action,
    multilayer_action,
    multilayer_infinitesimal_action,
    neuron_scaling_action,
    nonlinear_action,
    nonlinear_pi,
    orbit_dimension,
    orthogonal_action,
    scaling_action,
)
from .activations import ACTIVATIONS, PAPER_ACTIVATIONS, Activation, get_activation, radial_rescaling
from .conserved import (
    angular_momentum,
    conserved_Q,
    conserved_Q_M,
    homogeneous_imbalance,
    imbalance_matrix,
    layer_imbalances,
    normalized_Q,
    radial_lambda,
)
from .dynamics import DivergenceError, Trajectory, gradient_descent, gradient_flow
from .hessian import hessian_eigenvalues, hessian_vector_product, loss_hessian, top_hessian_eigenvalues
from .init import expected_Q_xavier, gaussian_init, init_at_Q, spectral_init, xavier_init
from .models import MLP, TwoLayerNet, TwoLayerRadialNet, flatten, unflatten

__version__ = "0.1.0"
