"""``symmetry.kernels`` is [`symmetry.dynamics.compiled`][], the compiled speed path of the engine's GD step, under
its former name: the same module object (``symmetry.kernels is symmetry.dynamics.compiled``)."""
import sys

from .dynamics import compiled

sys.modules[__name__] = compiled
