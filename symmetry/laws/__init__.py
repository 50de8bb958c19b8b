"""All conservation laws of gradient flow (Marcotte, Gribonval & Peyré): count them (ALGO 2), find the polynomial
ones (ALGO 1). The package re-exports its modules' names."""
from __future__ import annotations

from .dimension import (DEFAULT_MAX_MEMORY, RANK_RTOL, SUPPORTED_LAYERS, Architecture, Factorization,
                        LieAlgebraDimension, MemoryEstimate, PolynomialLaws, VectorFields, _module_chain,
                        _module_fields, _pinched_rank, check_differentiable, count_conservation_laws,
                        gradient_fields, independent_count, independent_rows, known_law_count, laws_are_conserved,
                        lie_algebra_dimension, lie_bracket, linear_net, memory_estimate, monomial_exponents,
                        output_fields, polynomial_laws, product_map, random_architectures, random_polynomial_fields,
                        relu_net, symmetry_law_count, two_layer_net, vector_fields)
