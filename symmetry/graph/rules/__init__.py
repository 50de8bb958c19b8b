"""The rule families, one module each; importing this package fills the table ([`symmetry.graph.registry`][])."""
from . import attention, elementwise, linear, norm, pool, shape  # noqa: F401
