"""The model zoo of the coverage benchmark and its tests: tiny configurations of the Hugging Face, timm and
torchvision families, random weights (seeded), float64, no downloads. ``MODELS[name]()`` returns
``(model, example_input)``; the model is in eval mode unless its entry says otherwise."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

Tensor = torch.Tensor


class Logits(nn.Module):
    """A Hugging Face model whose forward returns its logits (or last hidden state) only."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


def _tokens(vocab: int, batch: int = 2, length: int = 6) -> Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(1))


def _image(size: int, channels: int = 3, batch: int = 2) -> Tensor:
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _no_zero_parameters(model: nn.Module) -> nn.Module:
    """Parameters a library initialises to exactly zero (timm's classifier heads) drawn small instead: a model
    whose output is identically 0 cannot be checked (module_symmetries refuses it)."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1 and not bool(p.ne(0).any()):
                p.copy_(0.02 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return model


def _hf(kind: str) -> Callable[[], tuple[nn.Module, Tensor]]:
    def build():
        import transformers as tf

        small = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                     vocab_size=50)
        if kind in ("llama", "mistral", "qwen2"):
            config_cls, model_cls = {"llama": (tf.LlamaConfig, tf.LlamaForCausalLM),
                                     "mistral": (tf.MistralConfig, tf.MistralForCausalLM),
                                     "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM)}[kind]
            config = config_cls(**small, num_key_value_heads=2, max_position_embeddings=32)
            x = _tokens(50)
        elif kind == "gpt2":
            config_cls, model_cls = tf.GPT2Config, tf.GPT2LMHeadModel
            config = config_cls(n_embd=16, n_layer=2, n_head=4, vocab_size=50, n_positions=32)
            x = _tokens(50)
        elif kind == "opt":
            config_cls, model_cls = tf.OPTConfig, tf.OPTForCausalLM
            config = config_cls(hidden_size=16, ffn_dim=32, num_hidden_layers=2, num_attention_heads=4,
                                vocab_size=50, max_position_embeddings=32, word_embed_proj_dim=16)
            x = _tokens(50)
        elif kind == "bert":
            config_cls, model_cls = tf.BertConfig, tf.BertForSequenceClassification
            config = config_cls(**small, max_position_embeddings=32, num_labels=3)
            x = _tokens(50)
        elif kind == "distilbert":
            config_cls, model_cls = tf.DistilBertConfig, tf.DistilBertModel
            config = config_cls(dim=16, hidden_dim=32, n_layers=2, n_heads=4, vocab_size=50,
                                max_position_embeddings=32)
            x = _tokens(50)
        elif kind == "vit":
            config_cls, model_cls = tf.ViTConfig, tf.ViTForImageClassification
            config = config_cls(**{k: v for k, v in small.items() if k != "vocab_size"}, image_size=16,
                                patch_size=8, num_labels=3)
            x = _image(16)
        elif kind == "t5":
            config_cls, model_cls = tf.T5Config, tf.T5EncoderModel
            config = config_cls(d_model=16, d_ff=32, d_kv=4, num_layers=2, num_heads=4, vocab_size=50)
            x = _tokens(50)
        else:
            raise KeyError(kind)
        config._attn_implementation = "eager" if kind in ("t5", "distilbert") else "sdpa"
        torch.manual_seed(0)
        model = model_cls(config).to(torch.float64).eval()
        return Logits(model), x
    return build


def _tv(name: str, size: int = 64) -> Callable[[], tuple[nn.Module, Tensor]]:
    def build():
        import torchvision

        torch.manual_seed(0)
        kwargs = {"num_classes": 5}
        if name in ("googlenet", "inception_v3"):
            kwargs["aux_logits"] = False
            kwargs["init_weights"] = True
        model = getattr(torchvision.models, name)(**kwargs).to(torch.float64).eval()
        return _no_zero_parameters(model), _image(size)
    return build


def _timm(name: str, size: int = 64, **kwargs) -> Callable[[], tuple[nn.Module, Tensor]]:
    def build():
        import timm

        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False, num_classes=5, **kwargs).to(torch.float64).eval()
        return _no_zero_parameters(model), _image(size)
    return build


class _Zoo(dict):
    """The named models; any other torchvision classification model or timm model by ``torchvision/NAME`` or
    ``timm/NAME`` (64×64 input, 75×75 for Inception v3)."""

    def __missing__(self, key: str):
        family, _, name = key.partition("/")
        if family == "torchvision":
            return _tv(name, 75 if name == "inception_v3" else 64)
        if family == "timm":
            return _timm(name)
        raise KeyError(key)


MODELS: dict[str, Callable[[], tuple[nn.Module, Tensor]]] = _Zoo({
    **{f"hf/{k}": _hf(k) for k in ("llama", "mistral", "qwen2", "gpt2", "opt", "bert", "distilbert", "vit", "t5")},
    **{f"torchvision/{k}": _tv(k, 75 if k == "inception_v3" else 64) for k in (
        "resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "densenet121", "googlenet", "inception_v3",
        "efficientnet_b0", "regnet_x_400mf", "convnext_tiny", "squeezenet1_0", "shufflenet_v2_x0_5", "vgg11",
        "alexnet", "mnasnet0_5", "vit_b_16")},
    **{f"timm/{k}": _timm(k, **kw) for k, kw in (
        ("resnet18", {}), ("seresnext26d_32x4d", {}), ("convnext_atto", {}), ("efficientnet_b0", {}),
        ("mobilenetv3_small_050", {}), ("regnetx_002", {}), ("densenet121", {}),
        ("deit_tiny_patch16_224", {"img_size": 64}), ("mixer_s16_224", {"img_size": 64}),
        ("resmlp_12_224", {"img_size": 64}), ("poolformer_s12", {}), ("convmixer_768_32", {}),
        ("swin_tiny_patch4_window7_224", {"img_size": 64, "window_size": 2}), ("levit_128s", {"img_size": 64}))},
})
