"""The memory a count needs, estimated before anything is allocated and compared with ``max_memory``."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .chain import _Chain, _OVERHEAD_BYTES, _OVERSAMPLE, _module_chain
from .factorisations import Factorization
from .fields import VectorFields

#: Default ``max_memory`` of the counts, in bytes (the issue's target: 4 GB on a 2-core CPU).
DEFAULT_MAX_MEMORY = 4 * 10**9


@dataclass(frozen=True)
class _Pinch:
    """How the fields are sampled: every field has a one-hot mask e_i at hidden layer ``layer``
    (or a one-hot input e_i for ``layer`` = 0), so it touches only neuron i's own parameters
    (``block`` of them: its incoming row and bias, its outgoing column) and the ``shared``
    parameters (the layers before its incoming and after its outgoing weights)."""

    layer: int
    neurons: int  # n_layer: one group of fields per neuron
    block: int
    shared: int
    per_group: int  # fields per neuron
    zero_rows: int  # fields with the mask (or input) 0: they touch the shared parameters only

    @property
    def rows(self) -> int:
        return self.neurons * self.per_group + self.zero_rows

    @property
    def stack(self) -> int:
        """Rows that reach the dense rank step on the shared columns (at most)."""
        return self.neurons * (self.per_group - self.block + 1) + self.zero_rows

    def flops(self) -> float:
        return 4.0 * (self.neurons * self.per_group * self.block ** 2 + self.stack * self.shared ** 2)


def _pinch_plan(chain: _Chain, layer: int) -> _Pinch:
    n = chain.widths
    if layer == 0:
        block = n[1]
    else:
        block = n[layer - 1] + int(chain.bias[layer - 1]) + n[layer + 1]
    shared = chain.D - n[layer] * block
    # the groups alone leave more rows than the rank the dense step can have; the fields with
    # mask 0 (nonzero when a bias follows the pinch) add the parameters after it once more
    extra = math.ceil((shared + _OVERSAMPLE) / n[layer])
    after = sum(math.prod(sh) for sh in _Chain(n[layer:], chain.bias[layer:], chain.free[layer:], "").shapes)
    after -= n[layer] * n[layer + 1]  # W_(layer+1) is in the blocks
    zero_rows = after + _OVERSAMPLE if any(chain.bias[layer:]) else 0
    return _Pinch(layer, n[layer], block, shared, block + extra, zero_rows)


def _choose_pinch(chain: _Chain, layer: int | None = None) -> _Pinch:
    """The input or a free hidden layer, whichever makes the fewest flops (or ``layer``)."""
    candidates = [0] + [l + 1 for l, f in enumerate(chain.free) if f]
    if layer is not None:
        if layer not in candidates:
            raise ValueError(f"pinch layer must be one of {candidates} (the input or a hidden layer with a free "
                             f"activation), got {layer!r}")
        return _pinch_plan(chain, layer)
    return min((_pinch_plan(chain, l) for l in candidates), key=lambda p: p.flops())


@dataclass(frozen=True)
class MemoryEstimate:
    """What a count will allocate, estimated before it allocates anything."""

    bytes: int
    method: str  # "one-hot masks" (chains with free activations only), "dense" or "path factorisation"
    detail: str

    @property
    def gb(self) -> float:
        return self.bytes / 1e9

    def __str__(self) -> str:
        return f"{self.gb:.3g} GB ({self.method}: {self.detail})"


def _estimate_chain(chain: _Chain) -> MemoryEstimate:
    D, L = chain.D, chain.known_law_rows()
    laws = 3 * L * D  # the laws' Jacobian, its copy in the rank step, and the check
    if all(chain.free):
        # chunked JVPs and VJPs (_LawGradients: at most 2·10⁶ numbers of tangents at once), the sketch
        laws = 4 * min(2 * 10**6, (L + _OVERSAMPLE) * D) + 2 * L * (L + _OVERSAMPLE)
        p = _choose_pinch(chain)
        groups = _groups_per_chunk(p)
        # per chunk of neurons: their fields (block and shared parts) with the vmapped gradient's
        # buffers (about twice more), the normalised and rotated copies and the SVD's U; then the
        # stack of shared rows and its SVD workspace (about one more copy)
        chunk = groups * p.per_group * (4 * p.block + 5 * p.shared + p.per_group)
        numbers = chunk + 2 * p.stack * p.shared + p.zero_rows * p.shared + laws
        where = "input" if p.layer == 0 else f"hidden layer {p.layer}"
        detail = (f"{p.rows} sampled fields, one-hot at the {where}: {p.neurons} blocks of {p.block} "
                  f"parameters and {p.shared} shared ones; dense rank step {p.stack}×{p.shared}; {L} known laws")
        return MemoryEstimate(8 * numbers + _OVERHEAD_BYTES, "one-hot masks", detail)
    # dense: D fields (D×D), their transposed copy and the growing basis (two copies while it grows),
    # then brackets of at most D random combinations whose JVP work is chunked near 2·10⁷ numbers
    numbers = 5 * D * D + laws + 4 * 10**7
    detail = f"{D} fields of D = {D} entries, brackets of random combinations; {L} known laws"
    return MemoryEstimate(8 * numbers + _OVERHEAD_BYTES, "dense", detail)


def _groups_per_chunk(p: _Pinch) -> int:
    """Neurons whose fields are held at once: about 2·10⁶ numbers of fields per chunk."""
    return max(1, min(p.neurons, int(2e6 // max(1, p.per_group * (p.block + p.shared)))))


def _estimate_factorization(fact: Factorization) -> MemoryEstimate:
    D = fact.D
    try:  # the number of outputs without computing them
        N = fact.phi(torch.empty(D, dtype=torch.float64, device="meta")).numel()
    except Exception:  # noqa: BLE001  φ with data-dependent code: evaluate it (it is small then)
        N = fact.phi(fact.random_point()).numel()
    K = min(N, D)
    # φ and its pullbacks for K cotangents of N entries (each pullback holds about two N-sized
    # buffers), the K×D fields, their copy and the basis, the chunked JVP tables (2·10⁷ numbers)
    numbers = 3 * K * N + N + 5 * D * D + 4 * 10**7
    return MemoryEstimate(8 * numbers + _OVERHEAD_BYTES, "path factorisation",
                          f"phi has N = {N} outputs (one per path for a ReLU net), D = {D}")


def memory_estimate(model) -> MemoryEstimate:
    """The memory a count of ``model`` (a Factorization, VectorFields or torch.nn.Module) needs,
    estimated from its sizes alone, without allocating the problem."""
    if isinstance(model, Factorization):
        return _estimate_factorization(model)
    if isinstance(model, VectorFields):
        D = model.D
        return MemoryEstimate(8 * (5 * D * D + 4 * 10**7) + _OVERHEAD_BYTES, "dense", f"D = {D}")
    return _estimate_chain(_module_chain(model))


def _check_memory(estimate: MemoryEstimate, max_memory: float, what: str) -> None:
    if isinstance(max_memory, bool) or not isinstance(max_memory, (int, float)) or not max_memory > 0:
        raise ValueError(f"max_memory must be a positive number of bytes, got {max_memory!r}")
    if estimate.bytes > max_memory:
        hint = ("; as a torch.nn.Module the same net is counted without listing its paths"
                if estimate.method == "path factorisation" else "")
        raise MemoryError(f"counting the conservation laws of {what} needs an estimated {estimate}, above "
                          f"max_memory = {max_memory / 1e9:.3g} GB; raise max_memory if the machine has it, "
                          "or count a smaller model" + hint)
