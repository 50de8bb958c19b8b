"""Counting and finding conservation laws (Marcotte et al.; symmetry/laws/, conservation_laws.py).

Every count is checked against an independent number: a closed form (D − 1, r, r(r+1)/2),
the rank of the gradients of the known laws, or the number of hidden neurons.
"""
import pytest
import torch

import symmetry as S
from symmetry import laws as L

from test_figures import run_quick


def row_space_equal(A: torch.Tensor, B: torch.Tensor) -> bool:
    rank = L.independent_rows
    return rank(A) == rank(B) == rank(torch.cat([A, B]))


# --- closed-form counts ------------------------------------------------------------------------

@pytest.mark.parametrize("D", [2, 3, 5])
def test_product_of_D_variables_has_D_minus_1_laws(D):
    found = L.lie_algebra_dimension(L.product_map(D))
    assert found.dim == 1 and found.laws == D - 1


@pytest.mark.parametrize("n,r,m", [(3, 2, 4), (4, 1, 3), (3, 3, 3), (2, 5, 2), (3, 4, 2)])
def test_two_layer_linear_count_is_the_rank_of_the_imbalance_gradients(n, r, m):
    fact = L.linear_net((n, r, m))
    assert L.count_conservation_laws(fact) == L.known_law_count(fact)


def test_two_layer_linear_small_r_gives_all_entries_and_large_r_one_fewer():
    assert L.count_conservation_laws(L.linear_net((3, 2, 4))) == 3  # r(r+1)/2
    wide = L.linear_net((2, 5, 2))  # r = 5 against n + m = 4: the 15 entries have 14 independent gradients
    assert wide.known_laws(wide.random_point()).numel() == 15
    assert L.known_law_count(wide) == 14
    assert L.count_conservation_laws(wide) == 14


@pytest.mark.parametrize("n,r,m", [(2, 2, 2), (4, 3, 3), (3, 5, 2)])
def test_two_layer_relu_has_one_law_per_neuron(n, r, m):
    assert L.count_conservation_laws(L.relu_net((n, r, m))) == r
    assert L.count_conservation_laws(L.relu_net((n, r, m), bias=True)) == r


# --- ALGO 1 ------------------------------------------------------------------------------------

def test_algo1_on_two_layer_relu_returns_exactly_the_neuron_balances():
    n, r, m = 3, 2, 2
    fact = L.relu_net((n, r, m))
    found = L.polynomial_laws(fact, 2)
    assert found.count == r and found.independent == r
    # ‖u_k‖² − ‖v_k‖² as coefficient vectors over the same monomials: W1 is (r, n), W2 is (m, r)
    names = fact.variable_names()
    squares = {names[i]: j for j, e in enumerate(found.exponents.tolist()) for i, k in enumerate(e) if k == 2}
    expected = torch.zeros(r, found.exponents.shape[0], dtype=torch.float64)
    for k in range(r):
        for a in range(n):
            expected[k, squares[f"W1_{k}_{a}"]] = 1.0
        for i in range(m):
            expected[k, squares[f"W2_{i}_{k}"]] = -1.0
    assert row_space_equal(found.coefficients, expected)
    printed = [str(e) for e in found.expressions()]
    assert printed[0] == "W1_0_0**2 + W1_0_1**2 + W1_0_2**2 - W2_0_0**2 - W2_1_0**2"


def test_algo1_on_wide_linear_net_finds_15_polynomials_with_14_independent_gradients():
    found = L.polynomial_laws(L.linear_net((2, 5, 2)), 2)
    assert found.count == 15 and found.independent == 14


def test_algo1_degree_4_finds_products_of_laws_but_no_new_independent_one():
    found = L.polynomial_laws(L.linear_net((2, 2, 2)), 4)
    assert found.independent == 3  # the 3 entries of U1ᵀU1 − U2U2ᵀ
    assert found.count > 3  # products of laws are laws too


@pytest.mark.parametrize("D,count,seed", [(4, 2, 0), (3, 1, 1)])
def test_random_polynomial_fields_have_no_polynomial_law_up_to_degree_4(D, count, seed):
    fields = L.random_polynomial_fields(D, count, degree=2, seed=seed)
    for degree in (1, 2, 3, 4):
        assert L.polynomial_laws(fields, degree).count == 0


def test_algo1_finds_the_laws_of_a_rotation_field():
    # control for the test above: w(x, y, z) = (−y, x, 0) conserves z and x² + y²
    rotation = L.VectorFields(lambda t: torch.stack([-t[1], t[0], torch.zeros_like(t[0])])[None, :], 3,
                              ("x", "y", "z"), "rotation about the z axis")
    found = L.polynomial_laws(rotation, 2)
    assert found.independent == 2
    assert {str(e) for e in found.expressions()} >= {"z", "x**2 + y**2"}
    assert L.count_conservation_laws(rotation) == 2


# --- the reference's random architectures -------------------------------------------------------

def smallest(kind, k=10):
    archs = L.random_architectures(kind, 50, seed=0)
    return sorted(archs, key=lambda a: a.factorization().D)[:k]


@pytest.mark.parametrize("arch", smallest("linear") + smallest("relu"), ids=lambda a: f"{a.kind}{a.widths}{'b' * a.bias}")
def test_random_architecture_has_the_known_number_of_laws(arch):
    found = L.lie_algebra_dimension(arch.factorization())
    assert found.laws == arch.known_count()
    assert found.smallest_accepted > 1e5 * found.largest_rejected  # the rank decision has a wide gap


def test_random_architectures_follow_the_reference_ranges():
    linear, relu = L.random_architectures("linear", 50), L.random_architectures("relu", 50)
    assert all(2 <= len(a.widths) - 1 <= 4 and all(2 <= w <= 5 for w in a.widths) for a in linear)
    assert all(2 <= len(a.widths) - 1 <= 4 and all(2 <= w <= 9 for w in a.widths) for a in relu)
    assert sum(a.bias for a in relu) == 25 and not any(a.bias for a in linear)
    assert L.random_architectures("relu", 5, seed=3) == L.random_architectures("relu", 5, seed=3)


def test_random_combinations_of_path_gradients_give_the_same_count_as_all_paths():
    fact = L.relu_net((3, 3, 2, 2))  # 36 paths > D = 19 parameters
    N = fact.phi(fact.random_point()).numel()
    assert N > fact.D
    every_path = L.VectorFields(L.gradient_fields(fact, torch.eye(N, dtype=torch.float64)), fact.D,
                                tuple(fact.variable_names()), "all paths", fact.phi)
    assert L.count_conservation_laws(every_path) == L.count_conservation_laws(fact) == 5  # 3 + 2 hidden neurons


# --- the paper's laws, and how they connect to symmetry.conserved ------------------------------

def test_eq48_laws_are_the_packages_conserved_Q_and_are_complete_for_tanh():
    fact = L.two_layer_net(2, 5, 2, "tanh")  # h > m + n: the count is reached only at the third bracket level
    theta = fact.random_point(torch.Generator().manual_seed(0))
    U, V = fact.split(theta)
    assert torch.allclose(fact.known_laws(theta), S.conserved_Q((U, V), "tanh", per_neuron=True))
    found = L.lie_algebra_dimension(fact)
    assert found.laws == 5 and len(found.dims_per_level) >= 4


def test_laws_are_conserved_tells_a_law_from_a_non_law():
    fact = L.two_layer_net(3, 2, 4, "sigmoid")
    assert L.laws_are_conserved(fact, fact.known_laws) < 1e-12
    not_a_law = lambda t: (fact.split(t)[0] ** 2).sum().reshape(1)  # noqa: E731  ‖U‖² alone
    assert L.laws_are_conserved(fact, not_a_law) > 1e-2


def test_lie_bracket_of_linear_fields_is_the_commutator():
    gen = torch.Generator().manual_seed(0)
    A, B, x = (torch.randn(*s, generator=gen, dtype=torch.float64) for s in ((4, 4), (4, 4), (4,)))
    bracket = L.lie_bracket(lambda t: A @ t, lambda t: B @ t)
    assert torch.allclose(bracket(x), (A @ B - B @ A) @ x)


def test_counts_are_deterministic():
    a = L.lie_algebra_dimension(L.relu_net((3, 4, 2), bias=True), seed=5)
    b = L.lie_algebra_dimension(L.relu_net((3, 4, 2), bias=True), seed=5)
    assert (a.dim, a.dims_per_level, a.smallest_accepted) == (b.dim, b.dims_per_level, b.smallest_accepted)


# --- bad input ---------------------------------------------------------------------------------

def test_phi_not_differentiable_at_the_point_is_refused():
    kink = L.Factorization(lambda t: (t[0].abs() * t[1]).reshape(1), ((2,),), ("x",), "|x0|·x1")
    with pytest.raises(ValueError, match="not differentiable at theta"):
        L.lie_algebra_dimension(kink, torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert L.lie_algebra_dimension(kink, torch.tensor([0.5, 1.0], dtype=torch.float64)).laws == 1


def test_bad_arguments_name_themselves():
    fact = L.linear_net((2, 3, 2))
    with pytest.raises(ValueError, match="theta must be a flat tensor of D = 12"):
        L.lie_algebra_dimension(fact, torch.zeros(11, dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN"):
        L.lie_algebra_dimension(fact, torch.full((12,), float("nan"), dtype=torch.float64))
    for degree in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="degree must be an integer ≥ 1"):
            L.polynomial_laws(fact, degree)
    with pytest.raises(ValueError, match="max_monomials"):
        L.polynomial_laws(fact, 6, max_monomials=100)
    with pytest.raises(ValueError, match="widths"):
        L.linear_net((3,))
    with pytest.raises(ValueError, match="points"):
        L.lie_algebra_dimension(fact, points=0)
    with pytest.raises(ValueError, match="kind"):
        L.random_architectures("tanh", 3)
    with pytest.raises(TypeError, match="Factorization or VectorFields"):
        L.polynomial_laws(lambda t: t, 2)


def test_a_count_that_changes_between_points_is_refused():
    # whitened ReLU: with every V < 0 the net is dead near θ (all D coordinates are conserved);
    # a random point lies in another activation region with fewer laws
    fact = L.two_layer_net(3, 2, 4, "relu")
    theta = torch.cat([torch.ones(6), -torch.ones(8)]).double()
    assert L.lie_algebra_dimension(fact, theta, points=1).laws == fact.D
    with pytest.raises(ValueError, match="differs between the points"):
        L.lie_algebra_dimension(fact, theta, points=2)


# --- the script ---------------------------------------------------------------------------------

def test_conservation_laws_script_quick(tmp_path):
    r = run_quick("conservation_laws", tmp_path)
    assert r["claim_counts_match_known"] is True
    assert all(row["match"] for row in r["architectures"])
    assert {row["kind"] for row in r["architectures"]} == {"linear", "relu"}
    assert all(r["claim_paper_lists_complete"].values())
    for row in r["region_models"]:  # the paper's laws hold in every region, so never fewer are found
        assert min(g["laws"] for g in row["regions"]) >= row["paper_independent"]
    assert r["timing"]["linear"]["median_s"] > 0


@pytest.mark.parametrize("fact", [L.linear_net((5, 3, 5, 5)), L.linear_net((5, 2, 4, 5, 2)), L.relu_net((4, 5, 3, 3), True),
                                  L.two_layer_net(2, 5, 2, "tanh")], ids=lambda f: f.description)
def test_random_bracket_combinations_give_the_count_of_all_pairs(fact):
    fast = L.lie_algebra_dimension(fact)
    every_pair = L.lie_algebra_dimension(fact, random_combinations=False)
    assert fast.laws == every_pair.laws == L.known_law_count(fact)
    assert fast.dims_per_level[-1] == every_pair.dims_per_level[-1]


# --- torch.nn.Module input, memory guard ---------------------------------------------------------

def mlp(widths, bias=True, act=torch.nn.ReLU):
    layers = []
    for i in range(len(widths) - 1):
        layers.append(torch.nn.Linear(widths[i], widths[i + 1], bias=bias))
        if i < len(widths) - 2:
            layers.append(act())
    return torch.nn.Sequential(*layers)


@pytest.mark.parametrize("widths", [(3, 4, 2), (3, 4, 3, 2), (4, 5, 3, 3), (2, 6, 5, 3, 2), (5, 4, 1)])
@pytest.mark.parametrize("bias", [False, True])
def test_module_count_equals_the_path_factorisation_count(widths, bias):
    found = L.lie_algebra_dimension(mlp(widths, bias))
    fact = L.lie_algebra_dimension(L.relu_net(widths, bias))
    assert found.D == fact.D and found.laws == fact.laws == sum(widths[1:-1])
    assert found.smallest_accepted > 1e5 * found.largest_rejected


@pytest.mark.parametrize("bias", [False, True])
def test_every_one_hot_layer_gives_the_same_count(bias):
    # fields one-hot at the input or at any hidden layer: different block arrows, one count
    widths = (2, 3, 9, 2, 4, 3)
    chain = L._module_chain(mlp(widths, bias))
    theta = chain.random_point(torch.Generator().manual_seed(1))
    for layer in range(len(widths) - 1):
        dim, _, accepted, rejected, residual, law_rank = L._pinched_rank(chain, theta, L.RANK_RTOL, 0, layer)
        assert chain.D - dim == law_rank == sum(widths[1:-1])
        assert accepted > 1e5 * rejected and residual < 1e-12


def test_module_count_for_leaky_relu_nested_sequential_and_linear_blocks():
    leaky = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Sequential(torch.nn.LeakyReLU(0.1), torch.nn.Linear(4, 3)),
                                torch.nn.ReLU(), torch.nn.Linear(3, 2), torch.nn.Identity())
    assert L.count_conservation_laws(leaky) == L.count_conservation_laws(L.relu_net((3, 4, 3, 2), True)) == 7
    # identity between Linear layers: GL symmetry, the brackets are needed (dense ALGO 2)
    for widths in [(3, 2, 4), (2, 5, 2), (3, 2, 3, 2)]:
        assert L.count_conservation_laws(mlp(widths, False, torch.nn.Identity)) == L.known_law_count(L.linear_net(widths))
    # LeakyReLU with slope 1 is the identity: the count of a linear net, not of a ReLU net
    linear = torch.nn.Sequential(torch.nn.Linear(3, 2, bias=False), torch.nn.LeakyReLU(1.0), torch.nn.Linear(2, 4, bias=False))
    assert L.count_conservation_laws(linear) == 3


def test_mid_size_module_has_one_law_per_hidden_neuron():
    found = L.lie_algebra_dimension(mlp((78, 26, 13, 10)), points=1)  # D = 2545
    assert found.D == 2545 and found.laws == 26 + 13
    assert found.smallest_accepted > 1e8 * found.largest_rejected


def test_module_bad_input_names_the_layer_and_the_supported_set():
    with pytest.raises(ValueError, match=r"layer 1 \(Tanh\) is not supported.*Linear, ReLU, LeakyReLU, Identity"):
        L.count_conservation_laws(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1)))
    shared = torch.nn.Linear(3, 3)
    with pytest.raises(ValueError, match="shared \\(tied\\) weights"):
        L.count_conservation_laws(torch.nn.Sequential(shared, torch.nn.ReLU(), shared))
    class Residual(torch.nn.Sequential):  # a layer list that is not what the model computes
        def forward(self, x):
            return x + super().forward(x)

    with pytest.raises(S.NotSupportedError, match="node 'add'.*skip connection"):
        L.count_conservation_laws(Residual(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3)))
    with pytest.raises(ValueError, match="takes 4 inputs"):
        L.count_conservation_laws(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(4, 1)))
    with pytest.raises(ValueError, match="theta must be None"):
        L.lie_algebra_dimension(mlp((2, 3, 1)), torch.zeros(13, dtype=torch.float64))
    with pytest.raises(ValueError, match="max_memory must be a positive number"):
        L.count_conservation_laws(mlp((2, 3, 1)), max_memory=0)


def _resident_mb() -> tuple[float, float]:
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def _reset_peak() -> float:
    """Reset the kernel's peak-RSS mark of this process (Linux: clear_refs 5); returns RSS in MB."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pytest.skip("cannot reset the peak RSS here (/proc/self/clear_refs)")
    return _resident_mb()[0]


def test_refusal_above_max_memory_is_clear_and_comes_before_any_allocation(monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("the count started although it should have been refused")
    monkeypatch.setattr(L.dimension, "_pinched_rank", must_not_run)
    monkeypatch.setattr(L.dimension, "_module_fields", must_not_run)
    monkeypatch.setattr(L.dimension, "vector_fields", must_not_run)
    small = mlp((3, 4, 2))
    estimate = L.memory_estimate(small)
    with pytest.raises(MemoryError, match=r"needs an estimated .* GB .*above max_memory = 1e-06 GB"):
        L.count_conservation_laws(small, max_memory=1000)
    assert estimate.bytes > 1000
    with pytest.raises(MemoryError, match="path factorisation: phi has N = "):
        L.count_conservation_laws(L.relu_net((3, 4, 2)), max_memory=1000)
    # the MLP (about 0.3 GB) under a 0.1 GB limit, and a wider one under the default 4 GB:
    # refused at once, with the estimate, allocating nothing big
    before = _reset_peak()
    with pytest.raises(MemoryError, match=r"needs an estimated 0.2\d+ GB.*above max_memory = 0.1 GB"):
        L.count_conservation_laws(mlp((784, 256, 128, 10)), max_memory=1e8)
    with pytest.raises(MemoryError, match=r"needs an estimated \d+ GB.*above max_memory = 4 GB"):
        L.count_conservation_laws(mlp((784, 2048, 2048, 10)))
    with pytest.raises(MemoryError, match="as a torch.nn.Module the same net is counted without listing its paths"):
        L.count_conservation_laws(L.relu_net((784, 256, 128, 10), bias=True))  # 257 million paths
    assert _resident_mb()[1] - before < 50


_PEAK_SCRIPT = """
import json, sys, torch
from symmetry import laws as L
sys.path.insert(0, "tests")
from test_laws import mlp, _reset_peak, _resident_mb
L.count_conservation_laws(mlp((3, 4, 2)))  # torch.func's first-call buffers are not the count's
out = []
for widths in json.loads(sys.argv[1]):
    model = mlp(tuple(widths))
    estimate = L.memory_estimate(model).bytes
    before = _reset_peak()
    L.lie_algebra_dimension(model, points=1)
    out.append([estimate, (_resident_mb()[1] - before) * 2**20])
print(json.dumps(out))
"""


def test_memory_estimate_bounds_the_measured_peak_within_a_factor_3():
    # a fresh process: in this one, memory freed by earlier tests would hide the count's peak
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, json.dumps([[78, 26, 13, 10], [118, 38, 19, 10]])],
                          cwd=root, env=env, capture_output=True, text=True, check=True)
    for estimate, measured in json.loads(done.stdout.strip().splitlines()[-1]):
        assert measured <= estimate <= 3 * measured


# --- the count against a symmetry's quantities ---------------------------------------------------

@pytest.mark.parametrize("n,r,m", [(3, 2, 4), (2, 5, 2), (3, 4, 2)])
def test_the_paper_groups_quantities_are_all_the_laws_of_two_layer_nets(n, r, m):
    """GL's UᵀU − VᵀV (Example 7) and the positive scaling's α‖u‖² − ‖v‖² (Example 9) have as many independent
    entries as Marcotte et al. count laws (r = 5 against n + m = 4: 15 entries, 14 independent)."""
    from symmetry.groups import paper as P

    g = torch.Generator().manual_seed(n + r + m)
    params = (torch.randn(m, r, generator=g, dtype=torch.float64), torch.randn(n, r, generator=g, dtype=torch.float64))
    gl = P.GeneralLinear().bind(S.TwoLayerNet("identity"), params)
    assert L.symmetry_law_count(gl, params) == L.count_conservation_laws(L.linear_net((n, r, m)))
    scaling = P.PositiveScaling().bind(S.TwoLayerNet("relu"), params)
    assert L.symmetry_law_count(scaling, params) == L.count_conservation_laws(L.relu_net((n, r, m))) == r


@pytest.mark.parametrize("relu", [True, False])
def test_a_modules_symmetry_is_compared_with_its_count(relu):
    torch.manual_seed(0)
    hidden = [torch.nn.ReLU()] if relu else []
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), *hidden, torch.nn.Linear(6, 3)).double()
    sym = S.module_symmetries(net)
    count = L.count_conservation_laws(net, symmetry=sym)
    assert count == L.symmetry_law_count(sym, dict(net.named_parameters())) == sym.law_count() == (6 if relu else 21)

    class Overclaiming:  # the control: a "symmetry" whose quantities include the first weight itself
        def quantities(self, params):
            return {**sym.quantities(params), "weight": params["0.weight"]}

    with pytest.raises(RuntimeError, match="more than the"):
        L.count_conservation_laws(net, symmetry=Overclaiming())
    with pytest.raises(S.groups.NotSupportedError, match="flat vector"):
        L.count_conservation_laws(L.linear_net((3, 2, 4)), symmetry=sym)


def test_output_fields_and_the_law_count_of_a_gpt_block_with_attention_on_cpu():
    """nets.GPTBlock calls scaled_dot_product_attention, whose fused CPU kernel has neither a second derivative
    nor a forward-mode rule: output_fields runs the block on the math backend, so the count runs (before:
    NotImplementedError "forward AD ... _scaled_dot_product_flash_attention_for_cpu"), every field is orthogonal
    to the gradients of the block's conserved quantities, and those are no more than the count."""
    from symmetry.nets import GPTBlock

    torch.manual_seed(0)
    block = GPTBlock(4, 2, 2, rope=False).double()
    x = torch.randn(1, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    fields = L.output_fields(block, x)
    count = L.count_conservation_laws(fields, points=1)
    sym = S.module_symmetries(block, x)
    params = {n: p.detach() for n, p in block.named_parameters()}
    found = L.symmetry_law_count(sym, params)
    assert 0 < found <= count
    theta = torch.cat([p.reshape(-1) for p in params.values()])
    sizes, shapes = [p.numel() for p in params.values()], [p.shape for p in params.values()]

    def quantities(t):
        parts = {n: c.reshape(s) for n, c, s in zip(params, torch.split(t, sizes), shapes)}
        return torch.cat([q.reshape(-1) for q in sym.quantities(parts).values()])

    F, J = fields.fields(theta), torch.func.jacrev(quantities)(theta)
    assert float((F @ J.mT).abs().max()) <= 1e-12 * float(F.abs().max()) * float(J.abs().max())


@pytest.mark.parametrize("parametrization", ["weight_norm", "orthogonal"])
def test_a_parametrised_layer_is_refused_not_counted_as_the_plain_model(parametrization):
    """After ``parametrizations.weight_norm`` or ``orthogonal`` the trained tensors are the parametrisation's, not
    the layer's weight: the count refuses by name (the op that builds the weight) instead of counting the plain
    chain's laws (before: the plain model's count)."""
    from torch import nn
    from torch.nn.utils import parametrizations

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    getattr(parametrizations, parametrization)(net[0])
    op = {"weight_norm": "_weight_norm", "orthogonal": "tril"}[parametrization]
    with pytest.raises(S.NotSupportedError, match=op):
        S.count_conservation_laws(net)


# --- the law count of a module that is not a chain --------------------------------------------------------

class _Branches(torch.nn.Module):
    """x + B A x (+ E C x): a residual two-layer linear block, with a second parallel branch when ``h2``."""

    def __init__(self, d: int, h1: int, h2: int = 0):
        super().__init__()
        self.a, self.b = torch.nn.Linear(d, h1, bias=False), torch.nn.Linear(h1, d, bias=False)
        self.c = torch.nn.Linear(d, h2, bias=False) if h2 else None
        self.e = torch.nn.Linear(h2, d, bias=False) if h2 else None

    def forward(self, x):
        y = x + self.b(self.a(x))
        return y + self.e(self.c(x)) if self.c is not None and self.e is not None else y


@pytest.mark.parametrize("h1,h2", [(2, 0), (2, 1)])
def test_a_residual_and_a_branched_block_are_counted_from_their_output_fields(h1, h2):
    """φ(θ) = B A (+ E C): the identity adds a constant, two parallel branches are one two-layer linear net of width
    h = h1 + h2 (GL(h) mixes the branches). Marcotte et al.: UᵀU − VᵀV, h(h+1)/2 laws for h ≤ d; the oracle is that
    number by hand and the chain route on the chain of that width. The symmetry read from the graph (GL(h1) ×
    GL(h2)) gives fewer with two branches, and is accepted: laws no block explains. Before: refused (not a chain)."""
    torch.manual_seed(0)
    d, h = 4, h1 + h2
    model = _Branches(d, h1, h2).double()
    x = torch.randn(8, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    chain = torch.nn.Sequential(torch.nn.Linear(d, h, bias=False), torch.nn.Linear(h, d, bias=False)).double()
    count = L.count_conservation_laws(model, example_input=x, points=1)
    assert count == h * (h + 1) // 2 == L.count_conservation_laws(chain, points=1)
    sym = S.module_symmetries(model, x)
    assert sym.law_count() == h1 * (h1 + 1) // 2 + h2 * (h2 + 1) // 2
    assert L.count_conservation_laws(model, example_input=x, symmetry=sym, points=1) == count


def test_a_module_that_is_not_a_chain_is_refused_by_name_without_an_input_or_with_too_few():
    model = _Branches(4, 2).double()
    with pytest.raises(S.NotSupportedError, match=r"skip connection.*Pass example_input="):
        L.count_conservation_laws(model)
    with pytest.raises(ValueError, match="at least 2 samples"):
        L.count_conservation_laws(model, example_input=torch.randn(1, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"depends on the batch: \d+ laws on the first 1 samples"):
        L.count_conservation_laws(model, example_input=torch.randn(2, 4, dtype=torch.float64), points=1)
    with pytest.raises(ValueError, match="loss='mse' is not allowed"):
        L.count_conservation_laws(model, example_input=torch.randn(4, 4, dtype=torch.float64), loss="mse")
    with pytest.raises(ValueError, match="example_input and loss are for a torch.nn.Module"):
        L.count_conservation_laws(L.linear_net((3, 2, 4)), example_input=torch.zeros(2, 3))
