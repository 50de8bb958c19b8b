"""The compiled GD kernels (symmetry.dynamics.compiled) against the torch steps they replace (the engine's GD on TwoLayerRadialNet and on
SpectralModes, Prop. 14's decoupled per-mode system)."""

import ctypes
import signal
import sys

import pytest
import torch

import symmetry as S
from symmetry.dynamics import compiled as K

from conftest import randn

pytest.importorskip("numba")


def radial_problem(batch=3, m=5, n=10, h=5, dtype=torch.float64):
    """Gaussian (U, V) of the Fig. 7 shapes, a batch of configurations, Y ~ N(0, 1)."""
    U, V = S.gaussian_init(m, h, n, std=0.8, batch=(batch,), seed=3, dtype=torch.float64)
    return (U.to(dtype), V.to(dtype)), randn(m, n, seed=4).to(dtype)


def torch_steps(net, params, Y, lr, steps):
    """The engine's torch GD step (the model's closed-form gradient), ``steps`` times."""
    lr = lr.reshape(-1) if isinstance(lr, torch.Tensor) else lr
    return S.gradient_descent(net, params, None, Y, lr, steps, record_every=steps).params


def assert_kernel_equals_torch_over_1000_steps(model, params, Y, lr, rtol, moved):
    """1000 GD steps by the compiled kernel (one by call, the rest in one compiled loop) against the
    same steps by the engine's torch GD; the parameters must have moved by more than ``moved``."""
    expected = torch_steps(model, params, Y, lr, 1000)
    fast = tuple(p.clone() for p in params)
    stepper = K.compiled_stepper(model, fast, None, Y, lr)
    stepper()
    stepper.advance(999)
    for got, want, start in zip(fast, expected, params):
        assert (want - start).abs().max() > moved  # a real comparison
        torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * float(want.abs().max()))


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
@pytest.mark.parametrize("reduction", ["mean", "half_sum"])
def test_kernel_equals_the_torch_step_over_1000_steps(dtype, rtol, reduction):
    params, Y = radial_problem(dtype=dtype)
    assert_kernel_equals_torch_over_1000_steps(S.TwoLayerRadialNet(reduction=reduction), params, Y,
                                               1e-2 if reduction == "mean" else 2e-4, rtol, moved=1e-3)


def test_per_configuration_learning_rates_and_one_configuration():
    net = S.TwoLayerRadialNet()
    params, Y = radial_problem(batch=2)
    lr = torch.tensor([1e-2, 3e-2], dtype=torch.float64).reshape(2, 1, 1)  # as the engine passes it
    expected = torch_steps(net, params, Y, lr, 50)
    fast = tuple(p.clone() for p in params)
    K.compiled_stepper(net, fast, None, Y, lr).advance(50)
    for got, want in zip(fast, expected):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12 * float(want.abs().max()))
    single = tuple(p[1].clone() for p in params)
    K.compiled_stepper(net, single, None, Y, 3e-2).advance(50)
    for got, want in zip(single, expected):
        torch.testing.assert_close(got, want[1], rtol=1e-12, atol=1e-12 * float(want.abs().max()))


def test_compiled_gradient_descent_records_what_the_torch_loop_records():
    net = S.TwoLayerRadialNet()
    params, Y = radial_problem()
    observe = {"lambda": S.radial_lambda}
    fast = K.compiled_gradient_descent(net, params, None, Y, 1e-3, 200, record_every=20, observables=observe)
    slow = S.gradient_descent(net, params, None, Y, 1e-3, 200, record_every=20, observables=observe)
    assert torch.equal(fast.times, slow.times)
    torch.testing.assert_close(fast.loss, slow.loss, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(fast.observables["lambda"], slow.observables["lambda"], rtol=1e-12, atol=1e-15)
    assert K.compiled_gradient_descent(net, params, None, Y, 1e-2, 201, record_every=20) is None  # torch's job


def test_where_the_kernel_does_not_apply_it_says_none():
    params, Y = radial_problem()
    X = randn(10, 7, seed=5)
    assert K.compiled_stepper(S.TwoLayerRadialNet(), params, X, Y @ torch.zeros(10, 7, dtype=Y.dtype), 0.1) is None
    assert K.compiled_stepper(S.TwoLayerRadialNet(over="hidden"), params, None, Y, 0.1) is None
    assert K.compiled_stepper(S.TwoLayerRadialNet(f=lambda r: r ** -3), params, None, Y, 0.1) is None
    half = tuple(p.half() for p in params)
    assert K.compiled_stepper(S.TwoLayerRadialNet(), half, None, Y.half(), 0.1) is None


def test_without_numba_one_line_and_the_torch_step(monkeypatch, capsys):
    monkeypatch.setattr(K, "numba_available", lambda: False)
    monkeypatch.setattr(K, "_announced", False)
    params, Y = radial_problem()
    assert K.compiled_stepper(S.TwoLayerRadialNet(), params, None, Y, 0.1) is None
    assert K.compiled_stepper(S.TwoLayerRadialNet(), params, None, Y, 0.1) is None
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "numba is not installed" in lines[0] and "torch step" in lines[0]


def test_divergence_names_the_gd_step():
    net = S.TwoLayerRadialNet()
    params, Y = radial_problem()
    params[1][1, :, 2] = 0  # configuration 1, neuron 2: no incoming weights, g(0) = 0/0
    with pytest.raises(S.DivergenceError, match=r"by GD step 0 for configuration\(s\) \(1,\)"):
        K.compiled_gradient_descent(net, params, None, Y, 1e-3, 200, record_every=10,
                                    labels=None)


def modes_problem(batch=4, h=5, dtype=torch.float64):
    """(ū, v̄) of shape (batch, 1, h) away from v̄ = 0, targets σʸ > 0 of shape (1, h)."""
    u = 1 + 0.5 * randn(batch, 1, h, seed=6)
    v = 1 + 0.3 * randn(batch, 1, h, seed=7)
    return (u.to(dtype), v.to(dtype)), (3 * randn(1, h, seed=8).abs()).to(dtype)


def test_spectral_modes_gradient_is_autograd_and_conserves_lambda_under_flow():
    model = S.SpectralModes(1 / 50)
    params, Y = modes_problem()
    loss, grad = model.loss_and_grad(params, None, Y)
    leaves = tuple(p.clone().requires_grad_() for p in params)
    auto = torch.autograd.grad(model.loss(leaves, None, Y).sum(), leaves)
    for got, want in zip(grad, auto):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    # Prop. 15: λ = ū² + v̄² is conserved by the flow (ū∂L/∂ū + v̄∂L/∂v̄ = 0), while the loss falls
    flow = S.gradient_flow(model, params, None, Y, torch.linspace(0, 20, 5, dtype=torch.float64).tolist(),
                           observables={"lambda": lambda p: p[0] ** 2 + p[1] ** 2})
    lam = flow.observables["lambda"]
    assert float((lam - lam[0]).abs().max()) < 1e-9 * float(lam.abs().max())
    assert bool((flow.loss[-1] < 0.5 * flow.loss[0]).all())


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
@pytest.mark.parametrize("per_config", [False, True])
def test_modes_kernel_equals_the_torch_step_over_1000_steps(dtype, rtol, per_config):
    params, Y = modes_problem(dtype=dtype)
    lr = torch.tensor([1e-1, 2e-1, 5e-2, 1e-2], dtype=dtype) if per_config else 1e-1
    assert_kernel_equals_torch_over_1000_steps(S.SpectralModes(1 / 50), params, Y, lr, rtol, moved=1e-2)


def test_compiled_modes_trajectory_records_what_the_torch_loop_records():
    model = S.SpectralModes(1 / 50)
    params, Y = modes_problem()
    observe = {"lambda": lambda p: p[0] ** 2 + p[1] ** 2}
    fast = K.compiled_gradient_descent(model, params, None, Y, 1e-1, 300, record_every=30, observables=observe)
    slow = S.gradient_descent(model, params, None, Y, 1e-1, 300, record_every=30, observables=observe)
    assert torch.equal(fast.times, slow.times)
    torch.testing.assert_close(fast.loss, slow.loss, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(fast.observables["lambda"], slow.observables["lambda"], rtol=1e-12, atol=1e-15)
    # where it does not apply: data X, a target that does not broadcast, another model class
    assert K.compiled_stepper(model, params, randn(5, 3, seed=9), Y, 0.1) is None
    assert K.compiled_stepper(model, params, None, randn(1, 3, seed=9), 0.1) is None
    assert K.compiled_stepper(S.TwoLayerNet("tanh"), params, None, Y, 0.1) is None


@pytest.fixture
def python_sigint_handler():
    """SIGINT raises KeyboardInterrupt (Python's default handler) for the test, whatever the runner set."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _ctypes_callback_that_gets_ctrl_c():
    """A C → Python callback, as llvmlite's when numba loads a cached kernel, during which SIGINT arrives."""
    def callback():
        signal.raise_signal(signal.SIGINT)
        for _ in range(1000):  # Python keeps running inside the callback: the handler runs here
            pass

    return ctypes.CFUNCTYPE(None)(callback)


def test_ctrl_c_inside_a_ctypes_callback_is_lost_without_the_guard(python_sigint_handler, monkeypatch):
    """The cause of a lost Ctrl-C (Fig. 7 ran to its end after SIGINT): the interrupt dies in the callback."""
    ignored = []
    monkeypatch.setattr(sys, "unraisablehook", ignored.append)  # "Exception ignored on calling ctypes callback"
    _ctypes_callback_that_gets_ctrl_c()()  # no KeyboardInterrupt reaches here
    assert [type(u.exc_value) for u in ignored] == [KeyboardInterrupt]


def test_a_compiled_call_delivers_ctrl_c_when_it_returns(python_sigint_handler):
    """CompiledSteps.advance holds SIGINT during the kernel call (load, compile, steps), then raises it."""
    callback, done = _ctypes_callback_that_gets_ctrl_c(), []
    steps = K.CompiledSteps(lambda k: (done or callback(), done.append(k)), (), ())  # Ctrl-C in the 1st call
    with pytest.raises(KeyboardInterrupt):
        steps.advance(7)
    assert done == [7]  # the call finished (the parameters are whole), then the interrupt came
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is restored
    steps.advance(3)  # and nothing is left pending
    assert done == [7, 3]


def test_the_former_name_symmetry_kernels_is_this_module():
    import symmetry.kernels
    from symmetry import kernels

    assert kernels is symmetry.kernels is K and K.compiled_stepper is S.dynamics.compiled_stepper
