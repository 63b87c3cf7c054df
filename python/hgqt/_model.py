"""hgqt.Model: a whole HGQ model (config-built, loaded, or composed with hgqt.Sequential)."""
from __future__ import annotations

import collections
import json
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch

from . import _hgqt
from ._module import Module, _register, as_tensor, json_origin
from .nn import FixedQuantizer, QLayer, _quantizer_spec


@_register("model")
class Model(Module):
    """A model of hgqt layers in evaluation order (a chain or, with ``inputs``, a graph).

    Call it on a batch ``[N, *input_shape]`` (tensor or numpy array). Its layers are
    ``model.layers`` (by name; ``model["dense_1"]`` and ``model.dense_1`` work too), each with
    ``quantizers`` by role. ``meta`` holds the checkpoint's metadata when it was loaded from one
    (epoch, val_accuracy, ebops, feature_mean/std, ...), ``trace_info`` the last hgqt.trace.
    """

    def extra_repr(self) -> str:
        return f"input_shape={self.input_shape}, output_shape={self.output_shape}"

    @property
    def meta(self) -> Optional[Dict[str, Any]]:
        return self.__dict__.get("_meta")

    @property
    def trace_info(self) -> Optional[Dict[str, Any]]:
        return self.__dict__.get("_trace_info")

    @property
    def layers(self) -> "collections.OrderedDict[str, QLayer]":
        """The layers by name, in evaluation order."""
        return collections.OrderedDict(self._modules.items())

    def layer_info(self) -> List[Dict[str, Any]]:
        """Per layer: name, type, inputs (layer names or "input"), input and output shapes."""
        return self._cpp.layer_entries()

    def __getitem__(self, key: Union[int, str]) -> QLayer:
        if isinstance(key, int):
            return list(self._modules.values())[key]
        if key not in self._modules:
            raise KeyError(f"no layer named '{key}' (layers: {', '.join(self._modules)})")
        return self._modules[key]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    @property
    def input_shape(self) -> List[int]:
        """Per-sample input shape (batch axis excluded)."""
        return self._cpp.input_shape()

    @property
    def output_shape(self) -> List[int]:
        """Per-sample output shape."""
        return self._cpp.output_shape_of_model()

    @property
    def outputs_probabilities(self) -> bool:
        """True when the last layer is a softmax (outputs are probabilities, not logits)."""
        return self._cpp.outputs_probabilities()

    def ebops(self) -> torch.Tensor:
        """Sum of the layers' differentiable EBOPs (a scalar tensor with a gradient)."""
        return self._cpp.ebops()

    def bits_l1(self) -> torch.Tensor:
        """Sum of every quantizer's bit widths (the gamma term)."""
        return self._cpp.bits_l1()

    def constrain(self) -> None:
        """Projects every quantizer's bit parameters into their bounds (after optimizer.step())."""
        self._cpp.constrain()

    def quantizers(self) -> List[Tuple[str, str, FixedQuantizer]]:
        """Every quantizer as (layer name, role, quantizer), in evaluation order."""
        out = []
        for name, layer in self._modules.items():
            for role, q in layer.quantizers.items():
                out.append((name, role, q))
        return out

    def forward_exact(self, x: Any, batch_size: int = 4096) -> torch.Tensor:
        """The eval-mode outputs computed in float64 on a copy of the model: the bit-exact
        reference that hgqt.emulate and the exported hardware reproduce. ``x`` is what the
        model sees: for a model trained with standardize: true, compare with
        ``hgqt.emulate(archive, raw_x)`` or ``hgqt.emulate(archive, x, preprocess=False)``."""
        return _hgqt.forward_float64(self._cpp, as_tensor(x), int(batch_size))

    def model_config(self) -> Dict[str, Any]:
        """The model section (input_shape, quantizer_defaults, layers) as a dict."""
        return _hgqt.yaml_to_py(self._cpp.model_yaml())

    def copy(self) -> "Model":
        """An independent copy (same layers, parameters and buffers copied)."""
        from ._module import _wrap
        out = _wrap(_hgqt.copy_model(self._cpp))
        for key in ("_meta", "_trace_info"):
            if self.__dict__.get(key) is not None:
                object.__setattr__(out, key, dict(self.__dict__[key]))
        return out  # type: ignore[return-value]

    def save(self, path: str, **meta: Any) -> str:
        """Writes an hgqt checkpoint (see hgqt.save_checkpoint)."""
        from ._api import save_checkpoint
        return save_checkpoint(self, path, **meta)

    def summary(self) -> Any:
        """Per-layer bit widths, pruning and EBOPs (see hgqt.summary)."""
        from ._api import summary
        return summary(self)


class QLutDense(Model):
    """A learned lookup-table dense layer (HGQ-LUT): ``y_o = act(sum_i T_io(q_io(x_i)))``.

    Every input-output connection has its own input quantizer ``q_io`` (0 bits prunes it) and a
    small learned function of that one quantized scalar (a tanh MLP of width ``hidden``, or
    ``w u + b`` with ``hidden_layers=0``) behind its own output quantizer; the hardware realises
    it as a table over every value of ``q_io``. ``QLutDense(16, 8, activation="relu",
    input_quantizer={"i": 2, "f": 3})`` maps [B, 16] to [B, 8]. Its cost term (``ebops()``) is
    the LUT estimate of the tables and adder trees (README, lut_dense).

    It is the config's ``lut_dense`` block, a small model of primitive layers (``<name>_in``
    quantizes the raw input, then reshape, fan-out, the tables ``<name>_tables``, the sum and
    the activation ``<name>``): ``tables`` is the learned_lut layer with the per-connection
    ``input`` and ``output`` (table) quantizers. ``name`` defaults to one by position, as a
    config's. ``hgqt.Sequential(..., lut, ...)`` takes over its layers (after another layer
    without ``<name>_in``: the tables quantize their inputs themselves); from then on call the
    model: the block itself refuses to run, as its layers live in the model.
    """

    def __init__(self, in_features: int, units: int, *, activation: str = "linear",
                 hidden: int = 8, hidden_layers: int = 1, max_table_bits: int = 12,
                 name: Optional[str] = None,
                 input_quantizer: Optional[Mapping[str, Any]] = None,
                 table_quantizer: Optional[Mapping[str, Any]] = None,
                 output_quantizer: Optional[Mapping[str, Any]] = None) -> None:
        spec: Dict[str, Any] = {"type": "lut_dense", "units": int(units),
                                "activation": activation, "hidden": int(hidden),
                                "hidden_layers": int(hidden_layers),
                                "max_table_bits": int(max_table_bits)}
        if name is not None:
            spec["name"] = str(name)
        for role, q in (("input", input_quantizer), ("table", table_quantizer),
                        ("output", output_quantizer)):
            if q is not None:
                spec[f"{role}_quantizer"] = _quantizer_spec(q, f"hgqt.nn.QLutDense: {role}_quantizer")
        origin = "hgqt.nn.QLutDense"
        text = json.dumps({"input_shape": [int(in_features)], "layers": [spec]})
        with json_origin(origin, layer_prefix=True):
            cpp = _hgqt.build_model_yaml(text, origin)
        Module.__init__(self, cpp)
        object.__setattr__(self, "_spec", spec)

    @property
    def spec(self) -> Dict[str, Any]:
        """The block's config entry (as in model.layers)."""
        return dict(self.__dict__["_spec"])

    @property
    def tables(self) -> QLayer:
        """The learned_lut layer: one function per connection, quantizers ``input`` and
        ``output`` (each [in_features, units])."""
        return next(layer for layer in self.layers.values() if layer.kind == "learned_lut")

    def _check_own(self, what: str) -> None:
        owner = self.__dict__.get("_owner")
        if owner is not None:
            raise RuntimeError(f"hgqt.nn.QLutDense: its layers are part of an hgqt.Sequential "
                               f"now ({owner}); call {what} on that model")

    def forward(self, *inputs: Any) -> torch.Tensor:
        self._check_own("forward")
        return super().forward(*inputs)

    def ebops(self) -> torch.Tensor:
        self._check_own("ebops()")
        return super().ebops()

    def constrain(self) -> None:
        self._check_own("constrain()")
        super().constrain()


def Sequential(*layers: QLayer, input_shape: Optional[List[int]] = None) -> Model:
    """Composes hgqt layers into an hgqt.Model (a chain), which hgqt can train, trace, save,
    summarize and export.

    The layers keep their current values and become views of the model's layers: after
    ``m = hgqt.Sequential(a, b)``, ``a.kernel`` is ``m[0].kernel``. Build the model before
    creating the optimizer. ``input_shape`` defaults to the first layer's.
    """
    if not layers:
        raise ValueError("hgqt.Sequential: needs at least one layer")
    specs = []
    for n, layer in enumerate(layers):
        if isinstance(layer, QLutDense):
            specs.append(layer.spec)
            continue
        if not isinstance(layer, QLayer) or layer.spec is None:
            raise TypeError(f"hgqt.Sequential: argument {n} is not an hgqt layer built in Python "
                            f"(got {type(layer).__name__}); use hgqt.nn layers")
        specs.append(dict(layer.spec))
    shape = input_shape if input_shape is not None else layers[0].input_shape
    section: Dict[str, Any] = {"input_shape": list(shape), "layers": specs}
    from ._module import _wrap, json_origin
    with json_origin("hgqt.Sequential"):
        cpp = _hgqt.build_model_yaml(json.dumps(section), "hgqt.Sequential")
    model = _wrap(cpp)
    built = list(zip(model.layers.items(), model.layer_info()))
    # Each argument's layers, in order: one layer, or a block's layers (a QLutDense after another
    # layer has no `<name>_in`: the model's input is not its input).
    parts: List[Tuple[QLayer, Optional[List[int]]]] = []
    for n, layer in enumerate(layers):
        if isinstance(layer, QLutDense):
            layer._check_own("hgqt.Sequential")
            subs = list(layer.layers.values())
            if n > 0:
                subs = subs[1:]
            parts += [(s, list(layer.input_shape) if k == 0 else None) for k, s in enumerate(subs)]
        else:
            parts.append((layer, layer.input_shape))
    if len(parts) != len(built):
        raise RuntimeError(f"hgqt.Sequential: {len(built)} model layers for {len(parts)} parts")
    for ((name, target), info), (layer, expected) in zip(built, parts):
        got = info["input_shape"]
        if expected is not None and list(expected) != list(got):
            raise ValueError(f"hgqt.Sequential: layer {name} was built for input {expected}, "
                             f"but gets {got} here")
        mine = dict(layer._cpp.state())
        with torch.no_grad():
            for key, t in target._cpp.state():
                t.copy_(mine[key].to(t.device, t.dtype))
        layer._repoint(target._cpp)
        model._modules[name] = layer  # the caller's object is the model's layer
    for n, layer in enumerate(layers):
        if isinstance(layer, QLutDense):  # its own C++ model no longer holds its layers' values
            object.__setattr__(layer, "_owner", f"argument {n}")
    return model  # type: ignore[return-value]
