"""The models researchers use, read through torch.export, and a user's model done carelessly (tied weights,
half precision, meta, compiled and wrapped models). Tiny configurations, random weights, float64, no downloads
(benchmarks/zoo_models.py).

Oracle independent of the reader: the model's own output under a random element of the whole group found (every
block at once, drawn here, applied with ``act_params``) equals the output without it; the quantities are those
of the paper's Example-3/GL form, so the check on the output is what a symmetry means."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import symmetry as S
from symmetry.graph import register_rule
from symmetry.graph.rules.elementwise import homogeneous

ROOT = Path(__file__).resolve().parents[1]
DT = torch.float64
_spec = importlib.util.spec_from_file_location("zoo_models", ROOT / "benchmarks" / "zoo_models.py")
assert _spec is not None and _spec.loader is not None
zoo_models = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(zoo_models)


def _rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


def _keeps_output(model, x, sym, loss=None) -> float:
    params = {k: v.detach() for k, v in model.named_parameters()}
    element = sym.random_element(0.3, torch.Generator().manual_seed(5), params=params)
    with torch.no_grad():
        before = torch.func.functional_call(model, params, (x,))
        after = torch.func.functional_call(model, sym.act_params(params, element), (x,))
    if loss == "cross_entropy":
        before, after = before.log_softmax(-1), after.log_softmax(-1)
    return _rel(after, before)


ZOO = ["hf/llama", "hf/qwen2", "hf/gpt2", "hf/opt", "hf/bert", "hf/distilbert", "hf/vit", "hf/t5",
       "torchvision/densenet121", "torchvision/mobilenet_v2", "torchvision/googlenet", "torchvision/inception_v3",
       "timm/resnet18", "timm/deit_tiny_patch16_224", "timm/convnext_atto"]


# the largest exports (tens of thousands of nodes or parameters in the millions): pytest -m slow
SLOW_ZOO = {"torchvision/densenet121", "torchvision/googlenet", "torchvision/inception_v3", "timm/resnet18"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow if n in SLOW_ZOO else ()) for n in ZOO])
def test_zoo_model_accepted_every_block_checked_and_the_group_keeps_the_output(name):
    """transformers 5 / timm / torchvision models built from tiny configs: read (fx refused every Hugging Face
    model and DenseNet/MobileNetV2/GoogLeNet/Inception v3), every block checked by module_symmetries, and a random
    element of the whole group found keeps the output (drawn and applied here)."""
    torch.set_num_threads(1)
    model, x = zoo_models.MODELS[name]()
    sym = S.module_symmetries(model, x)
    assert sym.blocks, sym.describe()
    assert set(sym.coverage) == {n for n, _ in model.named_parameters()}
    assert _keeps_output(model, x, sym) < 1e-9


def test_gpt2_conv1d_read_and_the_tied_embedding_reported_not_refused():
    """GPT-2's Conv1D is aten.addmm: its layers are producers; wte is read at two places (embedding, head) and
    reported as tied, the rest of the model keeps its blocks."""
    model, x = zoo_models.MODELS["hf/gpt2"]()
    sym = S.module_symmetries(model, x)
    c_fc = [b for b in sym.blocks if any("mlp.c_fc.weight" in p for p in b.parameters())]
    assert c_fc, sym.describe()
    assert "tied" in sym.coverage["model.transformer.wte.weight"][0]


def test_llama_gqa_reads_and_the_readme_example_runs_on_it():
    model, x = zoo_models.MODELS["hf/llama"]()
    sym = S.module_symmetries(model, x, "cross_entropy")
    assert any(isinstance(b, S.groups.blocks.TranslationBlock) for b in sym.blocks)
    for layer in range(2):  # GQA: 4 query heads read 2 key heads; the Q–K block of each key group
        a = f"model.model.layers.{layer}.self_attn."
        qk = sym.block(f"{a}k_proj–{a}q_proj")
        assert {a + "q_proj.weight", a + "k_proj.weight"} <= qk.parameters()
    assert sym.law_count() > 0 and _keeps_output(model, x, sym, "cross_entropy") < 1e-9


# ------------------------------------------------------------------------------------ a careless user
class TiedAutoencoder(nn.Module):
    def __init__(self, bias: bool):
        super().__init__()
        self.enc = nn.Linear(4, 6, bias=bias)

    def forward(self, x):
        return F.linear(torch.relu(self.enc(x)), self.enc.weight.t())


def test_tied_autoencoder_whose_action_does_nothing_reports_no_law():
    """F.linear(relu(enc(x)), enc.weight.t()): the rescaling moves the one tensor by g and 1/g at once — no law
    (the old reader reported 6 conserved quantities that are identically 0)."""
    for bias in (False, True):
        model = TiedAutoencoder(bias).to(DT)
        sym = S.module_symmetries(model, torch.randn(5, 4, dtype=DT))
        assert sym.law_count() == 0 and "tied" in sym.coverage["enc.weight"][0], sym.describe()


def test_a_linear_used_twice_is_read_and_reported():
    shared = nn.Linear(3, 3).to(DT)
    sym = S.module_symmetries(nn.Sequential(shared, nn.ReLU(), shared), torch.randn(4, 3, dtype=DT))
    assert "read at 2 places" in sym.coverage["0.weight"][0]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_checked_at_a_tolerance_that_follows_the_dtype(dtype):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2)).to(dtype)
    sym = S.module_symmetries(model, torch.randn(16, 3).to(dtype))
    assert [b.name for b in sym.blocks] == ["0"]
    assert f"the tolerance for {str(dtype).replace('torch.', '')}" in sym.describe()
    assert S.modules.CHECK_TOLERANCE[dtype] > S.modules.CHECK_TOLERANCE[torch.float32]


def test_wrapped_models_are_read_through_the_module_they_run():
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)).to(DT)
    x = torch.randn(6, 3, dtype=DT)
    plain = S.module_symmetries(inner, x)
    for wrapper, prefix in ((nn.DataParallel(inner), "module."), (torch.compile(inner), "_orig_mod.")):
        sym = S.module_symmetries(wrapper, x)
        assert sym.keys() == plain.keys()
        assert set(sym.coverage) == {n for n, _ in wrapper.named_parameters()}
        assert all(p.startswith(prefix) for b in sym.blocks for p in b.parameters())
        sym.act(wrapper, sym.random_element(0.2, torch.Generator().manual_seed(0), params=wrapper))


def test_a_meta_model_is_refused_with_what_to_do():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    with pytest.raises(S.NotSupportedError, match="meta device.*to_empty"):
        S.module_symmetries(model)


def test_default_input_is_on_the_models_device_and_dtype():
    from symmetry.modules import _default_input

    (x,) = _default_input(nn.Sequential(nn.Linear(3, 2)), torch.float32, torch.device("cpu"))
    assert x.dtype == torch.float32 and x.device.type == "cpu" and x.shape == (8, 3)


# ------------------------------------------------------------------------------------ the reader's own contract
class Odd(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.b(torch.special.erfcx(self.a(x)))


def test_an_op_without_a_rule_breaks_by_name_and_register_rule_teaches_it():
    """erfcx has no rule: layer a's symmetry is broken naming the op (never assumed elementwise). A user's custom
    op with a registered rule (positively homogeneous of degree 1) keeps it."""
    model = Odd().to(DT)
    x = torch.randn(5, 3, dtype=DT)
    sym = S.module_symmetries(model, x)
    assert "special_erfcx" in sym.coverage["a.weight"][0] and "register_rule" in sym.coverage["a.weight"][0]

    @torch.library.custom_op("symtest::halfrelu", mutates_args=())
    def halfrelu(t: torch.Tensor) -> torch.Tensor:
        return torch.relu(t) * 0.5

    @halfrelu.register_fake
    def _(t):
        return torch.empty_like(t)

    class Custom(Odd):
        def forward(self, x):
            return self.b(torch.ops.symtest.halfrelu(self.a(x)))

    model = Custom().to(DT)
    assert "halfrelu" in S.module_symmetries(model, x).coverage["a.weight"][0]
    register_rule(torch.ops.symtest.halfrelu, lambda w, n, a, r: homogeneous(w, a["t"], 1.0))
    assert S.module_symmetries(model, x).keys() == ["a"]


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.first, self.gate = nn.Linear(3, 4), nn.Linear(4, 4)
        self.last = nn.Linear(4, 2)

    def forward(self, x):
        h = torch.relu(self.first(x))
        return self.last(Gate.apply_gate(self.gate, h))


class Gate:
    @staticmethod
    def apply_gate(layer, h):
        return layer(h)


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(4, 4)

    def forward(self, h):
        if float(h.sum()) > 0:  # data-dependent Python control flow
            return self.inner(h)
        return h


class WithDataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.first, self.branch, self.last = nn.Linear(3, 4), DataDependent(), nn.Linear(4, 2)

    def forward(self, x):
        return self.last(self.branch(torch.relu(self.first(x))))


def test_an_error_names_the_submodule_and_leaves_keeps_it_opaque():
    model = WithDataDependent().to(DT)
    x = torch.randn(5, 3, dtype=DT)
    with pytest.raises(S.NotSupportedError, match=r"while recording branch \(DataDependent\).*leaves=\['branch'\]"):
        S.module_symmetries(model, x)
    sym = S.module_symmetries(model, x, leaves=["branch"])
    assert sym.coverage["branch.inner.weight"][0].startswith("none")
    with pytest.raises(ValueError, match="leaves: 'brnch' is not a submodule"):
        S.module_symmetries(model, x, leaves=["brnch"])


def test_dropout_in_train_mode_is_read_and_checked_with_one_random_stream():
    """nn.TransformerEncoderLayer in train mode (dropout 0.1): the old reader refused it (its check passes ran
    different dropout masks)."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True).to(DT).train()
    x = torch.randn(2, 5, 8, dtype=DT)
    sym = S.module_symmetries(layer, x)
    assert sym.blocks, sym.describe()


def test_docs_zoo_table_is_the_committed_benchmark():
    """docs/zoo.md's table is rendered from benchmarks/results/bench_zoo.json (no number typed by hand), and the
    benchmark accepted every model it ran with the group keeping the output."""
    import json

    spec = importlib.util.spec_from_file_location("bench_zoo", ROOT / "benchmarks" / "bench_zoo.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    record = json.loads((ROOT / "benchmarks" / "results" / "bench_zoo.json").read_text())
    page = (ROOT / "docs" / "zoo.md").read_text(encoding="utf-8")
    assert f"{bench.BEGIN}\n{bench.table(record)}\n\n{bench.summary(record)}\n{bench.END}" in page
    for row in record["rows"]:
        assert row["status"] == "accepted" and row["check_error"] < 1e-9, row


def test_a_model_whose_output_is_zero_is_said_unchecked_not_checked_vacuously():
    """timm starts its classifier heads at 0: every action would "keep" that output, so nothing is checked, and
    describe() says so (the monitor still records such a model: tests/test_robustness.py)."""
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).to(DT)
    nn.init.zeros_(model[2].weight), nn.init.zeros_(model[2].bias)
    sym = S.module_symmetries(model)
    assert sym.unchecked is not None and "NOT CHECKED: Sequential's output is identically 0" in sym.describe()
    assert sym.tolerance is None


@pytest.mark.parametrize("name", ["torchvision/shufflenet_v2_x0_5",
                                  pytest.param("timm/mixer_s16_224", marks=pytest.mark.slow)])  # 224² tokens: slow
def test_more_of_the_zoo(name):
    """ShuffleNet's channel shuffle (a view of a transposed value), MLP-Mixer's token mixing."""
    model, x = zoo_models.MODELS[name]()
    sym = S.module_symmetries(model, x)
    assert sym.blocks and _keeps_output(model, x, sym) < 1e-9


def test_the_mode_a_model_was_read_in_is_recorded_and_said():
    """A BatchNorm symmetry read in train mode is none in eval mode (running statistics do not rescale): the
    result says which mode it holds in."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2)).to(DT)
    x = torch.randn(4, 2, 4, 4, dtype=DT)
    train = S.module_symmetries(model.train(), x, approximate=True)
    evaluated = S.module_symmetries(model.eval(), x, approximate=True)
    assert train.training is True and "read in train mode" in train.describe()
    assert evaluated.training is False and "read in eval mode" in evaluated.describe()
    assert any("0.weight" in b.parameters() for b in train.blocks)
    assert not any("0.weight" in b.parameters() for b in evaluated.blocks)  # eval BatchNorm: an affine map


class EinsumAttention(nn.Module):
    def __init__(self, d=8, heads=2):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=False) for _ in range(4))

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = (m(x).view(B, T, self.heads, D // self.heads) for m in (self.q, self.k, self.v))
        mask = torch.ones(T, T).tril()  # a tensor made inside forward: a constant, not control flow
        scores = torch.einsum("bthd,bshd->bhts", q, k).masked_fill(mask == 0, float("-inf"))
        return self.o(torch.einsum("bhts,bshd->bthd", scores.softmax(-1), v).reshape(B, T, D))


def test_einsum_attention_and_the_transformer_encoder_stack():
    """The issue's gaps: einsum attention (no block found), torch.ones(t, t) inside forward, nn.TransformerEncoder."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8, dtype=DT)
    sym = S.module_symmetries(EinsumAttention().to(DT), x)
    assert sym.keys() == ["q–k[0]", "q–k[1]", "v[0]", "v[1]"]
    stack = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True), 2).to(DT)
    sym = S.module_symmetries(stack, x)
    for layer in range(2):
        assert f"layers.{layer}.self_attn.q–layers.{layer}.self_attn.k[0]" in sym.keys()
    assert _keeps_output(stack, x, sym) < 1e-9
