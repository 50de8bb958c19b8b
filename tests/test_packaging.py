"""What a user gets from `import symmetry`: a light import, a complete __all__, optional packages that
name their extra, a typed package. (The import's time is measured in benchmarks/bench_import.py.)"""
import subprocess
import sys
import types
from pathlib import Path

import pytest

import symmetry
from symmetry._optional import require

ROOT = Path(__file__).resolve().parents[1]
#: heavy or optional packages that `import symmetry` must not load (they load when a function needs them)
NOT_AT_IMPORT = ["torchvision", "matplotlib", "sympy", "scipy", "sklearn", "art", "mlxtend", "pandas", "repro"]


def test_import_loads_none_of_the_heavy_packages():
    code = ("import sys, symmetry; print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[1:]))))")
    out = subprocess.run([sys.executable, "-c", code, *NOT_AT_IMPORT], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == []


def test_all_lists_every_exported_name_and_each_resolves():
    exported = {name for name, value in vars(symmetry).items()
                if not name.startswith("_") and not isinstance(value, types.ModuleType)}
    listed = set(symmetry.__all__)
    assert exported - listed == set(), "exported but missing from __all__"
    assert len(symmetry.__all__) == len(listed), "__all__ lists a name twice"
    for name in symmetry.__all__:
        assert hasattr(symmetry, name), name


def test_each_submodules_all_names_only_what_it_defines():
    # `from symmetry.graph import *` raised AttributeError on two names left in graph's __all__
    import importlib
    import pkgutil
    for info in pkgutil.walk_packages(symmetry.__path__, "symmetry."):
        module = importlib.import_module(info.name)
        missing = [name for name in getattr(module, "__all__", ()) if not hasattr(module, name)]
        assert not missing, f"{info.name}.__all__ lists {missing}, which {info.name} does not define"


def test_a_missing_optional_package_names_the_extra_to_install():
    with pytest.raises(ImportError, match=r"pip install -e \"\.\[cifar\]\".*symmetry-flat-minima") as error:
        require("no_such_package_xyz.datasets", "cifar", "loading CIFAR-10")
    assert "loading CIFAR-10" in str(error.value) and "'no_such_package_xyz'" in str(error.value)
    assert isinstance(error.value.__cause__, ImportError)


def test_a_present_optional_package_is_returned():
    assert require("json", "laws", "json") is sys.modules["json"]


def test_package_is_typed():
    assert (Path(symmetry.__file__).parent / "py.typed").is_file()


#: symmetry.__all__ before the public surface was cut to what a researcher uses: every name still resolves as
#: ``symmetry.NAME``, without a warning (the lower-level ones from their modules)
FORMER_ALL = (
    "actions", "activations", "conserved", "dynamics", "hessian", "init", "laws", "models", "noether", "Activation",
    "ACTIVATIONS", "angular_momentum", "angular_momentum_vector", "balance_matrix", "conserved_Q", "conserved_Q_M",
    "count_conservation_laws", "data_angular_momentum", "DivergenceError", "expected_Q_xavier", "flatten",
    "gaussian_init", "get_activation", "gradient_descent", "gradient_flow", "hamiltonian", "hessian_eigenvalues",
    "hessian_vector_product", "homogeneous_imbalance", "imbalance_matrix", "infinitesimal_action", "init_at_Q",
    "layer_balance", "layer_imbalances", "lie_algebra_dimension", "linear_action", "linear_infinitesimal_action",
    "loss_hessian", "MLP", "MLPClassifier", "multilayer_action", "multilayer_infinitesimal_action",
    "nd_balance_bound", "neuron_scaling_action", "noether_charge", "nonlinear_action", "nonlinear_pi", "normalized_Q",
    "orbit_dimension", "orthogonal_action", "PAPER_ACTIVATIONS", "polynomial_laws", "PotentialModel", "radial_lambda",
    "radial_rescaling", "RankDeficiencyWarning", "scaling_action", "spectral_init", "SpectralModes", "swish_balance",
    "SwishMLP", "top_hessian_eigenvalues", "Trajectory", "TwoLayerNet", "TwoLayerRadialNet", "modules", "teleport",
    "teleport_to", "teleport_random", "TeleportingStepper", "TeleportSchedule", "GD", "SGD", "AdaGrad", "Adam",
    "AdamW", "HeavyBall", "Leapfrog", "ModuleModel", "Nesterov", "Snapshot", "State", "Stepper", "TwoLayerGD",
    "integrate", "run", "wrap_optimizer", "Eigenpairs", "eigenvector_parameters", "hessian_top_k", "lanczos",
    "module_hessian_vector_product", "ConservationMonitor", "Elementwise", "ModuleSymmetries", "module_symmetries",
    "NotSupportedError", "Symmetry", "SymmetryCheckError", "Q_normalizer", "unflatten", "xavier_init", "__version__",
)


def test_the_public_surface_is_short_and_every_former_name_still_resolves():
    import importlib
    import warnings

    assert 25 <= len(symmetry.__all__) <= 40, len(symmetry.__all__)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a former name is not deprecated: no warning
        for name in FORMER_ALL:
            assert getattr(symmetry, name) is not None, name
        for name, home in symmetry._HOME.items():  # a lower-level name is its module's own object, not listed
            assert getattr(symmetry, name) is getattr(importlib.import_module(f"symmetry.{home}"), name), name
            assert name not in symmetry.__all__, name
    with pytest.raises(AttributeError, match="no_such_name"):
        symmetry.no_such_name  # noqa: B018


def test_a_moved_module_resolves_in_repro_with_a_deprecation_warning():
    # in a fresh process: the first use of each old name warns (later ones find the module)
    code = ("import warnings; warnings.simplefilter('always'); import symmetry\n"
            "with warnings.catch_warnings(record=True) as seen:\n"
            "    from symmetry import experiment\n"
            "    import symmetry.data\n"
            "    from symmetry.report import tally\n"
            "import repro.experiment, repro.data, repro.report\n"
            "assert experiment is repro.experiment and symmetry.data is repro.data and tally is repro.report.tally\n"
            "print(*sorted({(w.category.__name__, str(w.message).split()[0]) for w in seen}), sep='\\n')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:3] == ["('DeprecationWarning', 'symmetry.data')",
                                         "('DeprecationWarning', 'symmetry.experiment')",
                                         "('DeprecationWarning', 'symmetry.report')"], out.stdout


def import_graph(package: Path) -> dict[str, set[str]]:
    """The package's modules, each with the package's modules it imports anywhere in its source (inside functions
    too: an import moved into a function to dodge a circle is still a circle). ``from X import name`` counts as an
    import of X's submodule where ``name`` is one, else of X."""
    import ast

    files = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                origin = node.module or ""
                if node.level:
                    anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                    origin = ".".join(anchor + ([node.module] if node.module else []))
                targets = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in files else origin
                           for alias in node.names]
            else:
                continue
            edges |= {target for target in targets if target in files and target != name}
        graph[name] = edges
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan): each an import circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def test_import_circles_are_found_in_a_known_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert import_circles(graph) == [["a", "b", "c"]]


@pytest.mark.parametrize("package", ["symmetry", "repro"])
def test_no_import_circle_among_a_packages_modules(package):
    graph = import_graph(ROOT / package)
    assert len(graph) > 5 and all(name.startswith(package) for name in graph)
    assert import_circles(graph) == []


def test_the_library_imports_neither_matplotlib_nor_the_repository_machinery():
    import ast

    offenders = []
    for path in (ROOT / "symmetry").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("matplotlib", "repro")]
    assert offenders == []
