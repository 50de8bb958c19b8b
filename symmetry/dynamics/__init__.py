"""The one dynamics engine (being split into modules of one idea each; see steppers.py for now)."""
from .steppers import *  # noqa: F403
from .steppers import (DYNAMICS, STEPPERS, GradFn, Integrand, Observable, _rest_only, _start,  # noqa: F401
                       bind_in_place, friction, gradient_fn, make_stepper)
