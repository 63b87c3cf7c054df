"""Quantized layers and quantizers, constructible from Python.

Every layer is built by hgqt's C++ layer factory from the same keys as a ``model.layers`` entry
of a config, so a layer made here behaves exactly like one in a config-built model::

    import torch, hgqt
    layer = hgqt.nn.QDense(16, 64, activation="relu", kernel_quantizer={"b": 6, "i": 1})
    y = layer(torch.randn(32, 16))
    print(layer.quantizers["kernel"].bits().shape)   # torch.Size([16, 64])

Quantizer configs are dicts with the keys of a config's quantizer section: param (kif, kbi),
k, b, i, f, round (TRN, RND, RND_CONV, S_RND), overflow (WRAP, SAT, SAT_SYM), granularity
(tensor, channel, element), i_decay, trainable.
"""
from __future__ import annotations

import collections
import json
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from . import _hgqt
from ._module import Module, _register, _wrap, json_origin

__all__ = [
    "Module", "FixedQuantizer", "QLayer", "QDense", "QConv1d", "QConv2d", "QActivation",
    "Quantize", "Flatten", "QSoftmax", "QBatchNorm", "QEinsumDense", "layer",
]

_QUANTIZER_ROLES = ("input", "kernel", "bias", "output", "exp_input", "exp_output",
                    "inv_input", "inv_output")


def _quantizer_spec(value: Any, where: str) -> Dict[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{where}: expected a dict of quantizer settings (e.g. {{'b': 6}}), "
                        f"got {type(value).__name__}")
    return dict(value)


_BLOCKS = ("attention", "linformer_attention", "lut_dense")


def _build_layer(spec: Dict[str, Any], input_shape: Sequence[int], origin: str) -> "_hgqt.CppModule":
    if spec.get("type") in _BLOCKS:
        raise ValueError(f"{origin}: '{spec['type']}' is a block of several layers; build it "
                         "inside a model: hgqt.build_model({'model': {'input_shape': [...], "
                         f"'layers': [{{'type': '{spec['type']}', ...}}]}}, ...}})")
    if spec.get("type") == "einsum":
        raise ValueError(f"{origin}: an einsum layer reads two layers; build it inside a model "
                         "(hgqt.build_model) with inputs: [a, b]")
    shape = [int(s) for s in input_shape]
    text = json.dumps({"input_shape": shape, "layers": [spec]})
    with json_origin(origin, layer_prefix=True):
        model = _hgqt.build_model_yaml(text, origin)
    return model.children()[0][1]


@_register("quantizer")
class FixedQuantizer(Module):
    """A fixed-point quantizer with trainable per-element bit widths (quantization.md).

    ``FixedQuantizer(shape, place="datalane", **settings)`` quantizes tensors of per-sample
    ``shape`` (a leading batch axis is expected). ``place`` picks the defaults (weight: KBI b=8
    i=2 RND SAT_SYM; datalane and bias: KIF i=2 f=6 RND WRAP); ``settings`` override them.

    ``k``, ``i``, ``f`` (KIF) or ``b`` (KBI) are the module's own tensors: ``i`` and ``f``/``b``
    are trainable parameters (``i`` is a buffer for WRAP quantizers, which track it), ``k`` a
    buffer. ``kif()`` gives the integer widths the forward pass uses, ``bits()`` the
    differentiable width per element that EBOPs use.
    """

    def __init__(self, shape: Sequence[int], place: str = "datalane", **settings: Any) -> None:
        spec = {k: v for k, v in _hgqt.quantizer_defaults(place).items()
                if k not in ("shape", "batch_axis")}
        if "param" in settings:
            spec.pop("b", None)
            spec.pop("f", None)
        spec.update(settings)
        layer = _build_layer({"type": "quantize", "input_quantizer": spec}, shape,
                             "hgqt.nn.FixedQuantizer")
        Module.__init__(self, layer.children()[0][1])

    def kif(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The integer (k, i, f) of every parameter element, as the forward pass uses them."""
        return self._cpp.kif()

    def bits(self) -> torch.Tensor:
        """Bits per parameter element without the sign, differentiable (straight-through)."""
        return self._cpp.bits()

    def bits_l1(self) -> torch.Tensor:
        """Sum of the bit parameters' widths (the gamma term)."""
        return self._cpp.bits_l1()

    def constrain(self) -> None:
        """Clamps the bit parameters into their bounds (after each optimizer step)."""
        self._cpp.constrain()

    @property
    def options(self) -> Dict[str, Any]:
        """The quantizer's settings (param, round, overflow, granularity, initial widths...)."""
        return self._cpp.quantizer_options()

    @property
    def param_shape(self) -> List[int]:
        """Shape of k, i, f / b (broadcastable to the per-sample shape)."""
        return self._cpp.param_shape()


@_register("layer")
class QLayer(Module):
    """Base of the quantized layers: ``quantizers`` by role, ``ebops()``, ``constrain()``."""

    def __init__(self, spec: Dict[str, Any], input_shape: Sequence[int]) -> None:
        origin = f"hgqt.nn.{type(self).__name__}"
        Module.__init__(self, _build_layer(spec, input_shape, origin))
        object.__setattr__(self, "_spec", dict(spec))
        object.__setattr__(self, "_input_shape", [int(s) for s in input_shape])

    @property
    def spec(self) -> Optional[Dict[str, Any]]:
        """The layer's config entry (as in model.layers), when it was built from Python."""
        return self.__dict__.get("_spec")

    @property
    def input_shape(self) -> Optional[List[int]]:
        """Per-sample input shape, when known."""
        return self.__dict__.get("_input_shape")

    @property
    def quantizers(self) -> "collections.OrderedDict[str, FixedQuantizer]":
        """The layer's quantizers by role (input, kernel, bias, output, ...), in data-flow order."""
        return collections.OrderedDict(
            (role, self._modules[child]) for role, child in self._cpp.quantizer_roles())

    def ebops(self) -> torch.Tensor:
        """Differentiable EBOPs of the layer (0 for layers without products)."""
        return self._cpp.ebops()

    def constrain(self) -> None:
        """Clamps every quantizer's bit parameters into their bounds."""
        self._cpp.constrain()

    def output_shape(self, input_shape: Sequence[int]) -> List[int]:
        """Per-sample output shape for a per-sample input shape."""
        return self._cpp.output_shape([int(s) for s in input_shape])


def _with_quantizers(spec: Dict[str, Any], cls_name: str, quantizers: Mapping[str, Any]) -> Dict[str, Any]:
    """Adds `<role>_quantizer` entries to a layer spec; keys are roles, with or without the
    `_quantizer` suffix; None leaves a quantizer at its defaults."""
    for key, value in quantizers.items():
        role = key.removesuffix("_quantizer")
        if role not in _QUANTIZER_ROLES:
            raise TypeError(f"hgqt.nn.{cls_name}: unknown argument '{key}'")
        if value is not None:
            spec[f"{role}_quantizer"] = _quantizer_spec(value, f"hgqt.nn.{cls_name}: {role}_quantizer")
    return spec


@_register("dense")
class QDense(QLayer):
    """y = act(iq(x) @ kq(W) + bq(b)), then the optional output quantizer. W is [in, out].

    ``QDense(16, 64, activation="relu", kernel_quantizer={"b": 6})``; ``batchnorm=True`` folds
    a batch norm into kernel and bias. Without ``output_quantizer`` the layer has none.
    ``input_shape=[P, in_features]`` applies the layer to every particle (position) of a list
    with one shared kernel: ``QDense(3, 32, input_shape=[32, 3])`` maps [B, 32, 3] to [B, 32, 32].
    """

    def __init__(self, in_features: int, out_features: int, *, activation: str = "linear",
                 bias: bool = True, batchnorm: bool = False,
                 input_shape: Optional[Sequence[int]] = None,
                 input_quantizer: Optional[Mapping[str, Any]] = None,
                 kernel_quantizer: Optional[Mapping[str, Any]] = None,
                 bias_quantizer: Optional[Mapping[str, Any]] = None,
                 output_quantizer: Optional[Mapping[str, Any]] = None) -> None:
        spec = {"type": "dense", "units": int(out_features), "activation": activation,
                "use_bias": bool(bias), "batchnorm": bool(batchnorm)}
        _with_quantizers(spec, "QDense", {"input": input_quantizer, "kernel": kernel_quantizer,
                                          "bias": bias_quantizer, "output": output_quantizer})
        shape = [int(in_features)] if input_shape is None else [int(s) for s in input_shape]
        if not shape or shape[-1] != int(in_features):
            raise ValueError(f"hgqt.nn.QDense: input_shape {shape} must end in in_features = "
                             f"{int(in_features)}")
        super().__init__(spec, shape)


class _QConv(QLayer):
    _type = ""

    def __init__(self, input_shape: Sequence[int], filters: int, kernel_size: Any, *,
                 strides: Any = 1, padding: str = "valid", activation: str = "linear",
                 bias: bool = True, batchnorm: bool = False,
                 input_quantizer: Optional[Mapping[str, Any]] = None,
                 kernel_quantizer: Optional[Mapping[str, Any]] = None,
                 bias_quantizer: Optional[Mapping[str, Any]] = None,
                 output_quantizer: Optional[Mapping[str, Any]] = None) -> None:
        spec = {"type": self._type, "filters": int(filters), "kernel_size": kernel_size,
                "strides": strides, "padding": padding, "activation": activation,
                "use_bias": bool(bias), "batchnorm": bool(batchnorm)}
        _with_quantizers(spec, type(self).__name__, {
            "input": input_quantizer, "kernel": kernel_quantizer, "bias": bias_quantizer,
            "output": output_quantizer})
        super().__init__(spec, input_shape)


@_register("conv1d")
class QConv1d(_QConv):
    """1-D convolution, channels last: input [length, channels] per sample (Keras layout)."""
    _type = "conv1d"


@_register("conv2d")
class QConv2d(_QConv):
    """2-D convolution, channels last: input [height, width, channels] per sample."""
    _type = "conv2d"


@_register("activation")
class QActivation(QLayer):
    """y = q(act(x)) on per-sample ``shape``; ``activation`` is relu or linear."""

    def __init__(self, shape: Sequence[int], activation: str = "relu",
                 quantizer: Optional[Mapping[str, Any]] = None) -> None:
        spec = _with_quantizers({"type": "activation", "activation": activation}, "QActivation",
                                {"output": quantizer})
        super().__init__(spec, shape)


@_register("quantize")
class Quantize(QLayer):
    """A bare quantizer on the data path (typically the model input); settings as keywords."""

    def __init__(self, shape: Sequence[int], **settings: Any) -> None:
        spec = {"type": "quantize"}
        if settings:
            spec["input_quantizer"] = dict(settings)
        super().__init__(spec, shape)


@_register("flatten")
class Flatten(QLayer):
    """Flattens every axis but the batch axis."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__({"type": "flatten"}, shape)


@_register("softmax")
class QSoftmax(QLayer):
    """The table-based quantized softmax over the last axis (quantizers: input, exp_input,
    exp_output, inv_input, inv_output, output)."""

    def __init__(self, shape: Sequence[int], **quantizers: Optional[Mapping[str, Any]]) -> None:
        spec = _with_quantizers({"type": "softmax"}, "QSoftmax", quantizers)
        super().__init__(spec, shape)


@_register("einsum_dense")
class QEinsumDense(QLayer):
    """y = act(einsum(equation, iq(x), kq(W)) + bq(b)), then the optional output quantizer; the
    kernel is the equation's second operand, the bias runs along the output's last axis.

    ``QEinsumDense("phd,pj->jhd", [64, 2, 8], output_shape=[16, 2, 8])`` projects a particle list
    along the particle axis to 16 rows (Linformer). The batch axis is not written.
    """

    def __init__(self, equation: str, input_shape: Sequence[int], output_shape: Sequence[int], *,
                 activation: str = "linear", use_bias: bool = True,
                 **quantizers: Optional[Mapping[str, Any]]) -> None:
        spec = {"type": "einsum_dense", "equation": equation,
                "output_shape": [int(s) for s in output_shape], "activation": activation,
                "use_bias": use_bias}
        _with_quantizers(spec, "QEinsumDense", quantizers)
        super().__init__(spec, input_shape)


@_register("batchnorm")
class QBatchNorm(QLayer):
    """A quantized batch norm over the last (channel) axis of per-sample ``shape``."""

    def __init__(self, shape: Sequence[int], momentum: float = 0.99, epsilon: float = 1e-3,
                 **quantizers: Optional[Mapping[str, Any]]) -> None:
        spec = {"type": "batchnorm", "momentum": momentum, "epsilon": epsilon}
        _with_quantizers(spec, "QBatchNorm", quantizers)
        super().__init__(spec, shape)


def layer(type: str, input_shape: Sequence[int], **spec: Any) -> QLayer:
    """Any layer of a config's ``model.layers`` by its keys, e.g.
    ``hgqt.nn.layer("max_pool", [28, 28, 8], pool_size=2)`` or
    ``hgqt.nn.layer("lut", [16], function="tanh")``."""
    full = {"type": type, **spec}
    cpp = _build_layer(full, input_shape, f"hgqt.nn.layer('{type}')")
    obj = _wrap(cpp)
    object.__setattr__(obj, "_spec", full)
    object.__setattr__(obj, "_input_shape", [int(s) for s in input_shape])
    return obj  # type: ignore[return-value]
