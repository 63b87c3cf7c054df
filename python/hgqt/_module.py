"""Python faces of hgqt's C++ modules (models, layers, quantizers).

A wrapper is a real ``torch.nn.Module`` whose parameters and buffers are the C++ module's own
tensors (same storage, same autograd identity): ``parameters()``, ``state_dict()``,
``load_state_dict()``, ``zero_grad()``, ``train()``, ``eval()`` and ``to()`` behave as in PyTorch,
``torch.optim`` updates the C++ weights and bit widths in place, and a loss computed in Python
backpropagates through the C++ quantizers.
"""
from __future__ import annotations

import collections
import collections.abc
import contextlib
import re
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Type

import torch

from . import _hgqt

# kind (the C++ module's type name) -> wrapper class; filled by @_register.
_KINDS: Dict[str, Type["Module"]] = {}


def _register(*kinds: str) -> Callable[[Type["Module"]], Type["Module"]]:
    def deco(cls: Type["Module"]) -> Type["Module"]:
        for k in kinds:
            _KINDS[k] = cls
        return cls

    return deco


def _wrap(cpp: "_hgqt.CppModule") -> "Module":
    """The Python wrapper of a C++ module, of the class registered for its kind."""
    cls = _KINDS.get(cpp.kind, _KINDS.get("layer", Module))
    obj = cls.__new__(cls)
    Module.__init__(obj, cpp)
    return obj


def as_tensor(x: Any, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A torch.Tensor as is; a numpy array (or nested list) as a tensor of `dtype`."""
    if isinstance(x, torch.Tensor):
        return x
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency of python3-torch
        np = None
    if np is not None and isinstance(x, np.ndarray):
        if x.dtype == object:
            raise TypeError("expected a numeric array, got a numpy array of Python objects")
        return torch.as_tensor(np.ascontiguousarray(x), dtype=dtype)
    if isinstance(x, (list, tuple)):
        return torch.as_tensor(x, dtype=dtype)
    raise TypeError(f"expected a torch.Tensor or a numpy array, got {type(x).__name__}")


@contextlib.contextmanager
def json_origin(origin: str, layer_prefix: bool = False) -> Iterator[None]:
    """Config errors of text hgqt generated as JSON (from a dict or layer arguments): drops the
    JSON line:column, meaningless to the caller, and for a single layer its `layers[0].` path."""
    try:
        yield
    except ValueError as e:
        msg = str(e)
        pattern = re.escape(origin) + r":\d+:\d+: " + (r"(layers\[0\]\.)?" if layer_prefix else "")
        new = re.sub("^" + pattern, origin + ": ", msg)
        if new == msg:
            raise
        raise ValueError(new) from None


class _LiveTensors(collections.abc.MutableMapping):
    """A module's own parameters or buffers, read from C++ at every access (never stale)."""

    def __init__(self, owner: "Module", kind: str) -> None:
        self._owner = owner
        self._kind = kind  # "parameters" or "buffers"

    def _items(self) -> List[Tuple[str, torch.Tensor]]:
        return getattr(self._owner.__dict__["_cpp"], self._kind)()

    def __getitem__(self, key: str) -> torch.Tensor:
        for name, t in self._items():
            if name == key:
                return t
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter([name for name, _ in self._items()])

    def __len__(self) -> int:
        return len(self._items())

    def __contains__(self, key: object) -> bool:
        return any(name == key for name, _ in self._items())

    def __setitem__(self, key: str, value: Any) -> None:
        # `layer.kernel = torch.nn.Parameter(t)` copies the values into the C++ tensor.
        if key not in self:
            raise TypeError(
                f"cannot add {self._kind[:-1]} '{key}' to an hgqt {self._owner._cpp.kind} module: "
                "its tensors are fixed by the C++ layer")
        target = self[key]
        value = as_tensor(value, target.dtype)
        if tuple(value.shape) != tuple(target.shape):
            raise ValueError(f"{key}: expected shape {list(target.shape)}, got {list(value.shape)}")
        with torch.no_grad():
            target.copy_(value)

    def __delitem__(self, key: str) -> None:
        raise TypeError(f"cannot remove '{key}' from an hgqt module: its tensors live in C++")

    def __repr__(self) -> str:
        return f"{self._kind}({[name for name, _ in self._items()]})"


class Module(torch.nn.Module):
    """Base of every hgqt module in Python: a torch.nn.Module around a C++ module.

    A model's forward runs its layers in C++: forward hooks registered on the layers or
    quantizers inside an hgqt.Model do not fire (hooks on the model itself, or on hgqt layers
    composed in a Python module, do), and its layers cannot be replaced or removed.
    """

    def __init__(self, cpp: "_hgqt.CppModule") -> None:
        object.__setattr__(self, "_cpp", cpp)
        super().__init__()  # sets training = True: ignored until _ready (keeps the C++ mode)
        object.__setattr__(self, "_parameters", _LiveTensors(self, "parameters"))
        object.__setattr__(self, "_buffers", _LiveTensors(self, "buffers"))
        self._attach_children()
        object.__setattr__(self, "_ready", True)

    def _attach_children(self) -> None:
        modules = self.__dict__["_modules"]
        modules.clear()
        for name, child in self._cpp.children():
            modules[name] = _wrap(child)

    def _repoint(self, cpp: "_hgqt.CppModule") -> None:
        """Makes this wrapper (and its children) views of another C++ module of the same kind."""
        object.__setattr__(self, "_cpp", cpp)
        mine = self.__dict__["_modules"]
        theirs = cpp.children()
        if [n for n, _ in theirs] != list(mine.keys()):
            self._attach_children()
            return
        for name, child in theirs:
            mine[name]._repoint(child)

    def __delattr__(self, name: str) -> None:
        if name in self.__dict__.get("_modules", {}):
            raise TypeError(f"cannot remove '{name}' from an hgqt module: its forward runs in C++")
        super().__delattr__(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__dict__.get("_modules", {}) and value is not self._modules[name]:
            raise TypeError(f"cannot replace '{name}' of an hgqt module: its forward runs in C++ "
                            "and would keep the old layer (build a new model instead)")
        # A C++ tensor: `layer.bias += 1` (in place, then re-assigned) keeps it; any other value
        # of its shape is copied into it (the C++ layer keeps its own tensor).
        for kind in ("_parameters", "_buffers"):
            live = self.__dict__.get(kind)
            if isinstance(live, _LiveTensors) and name in live:
                if value is not live[name]:
                    live[name] = value
                return
        super().__setattr__(name, value)

    @property
    def training(self) -> bool:  # type: ignore[override]
        return self._cpp.training

    @training.setter
    def training(self, mode: bool) -> None:
        if self.__dict__.get("_ready"):
            self._cpp.train(bool(mode))

    @property
    def kind(self) -> str:
        """The C++ module's type: "model", "quantizer" or a layer type ("dense", "conv2d", ...)."""
        return self._cpp.kind

    def _input(self, x: Any) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            return x
        for _, t in self._cpp.state():  # numpy: the module's float type and device
            return as_tensor(x, t.dtype).to(t.device)
        return as_tensor(x)

    def forward(self, *inputs: Any) -> torch.Tensor:
        xs = [self._input(x) for x in inputs]
        if len(xs) == 1:
            return self._cpp.forward(xs[0])
        return self._cpp.forward_many(xs)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> "Module":
        # .to(), .cuda(), .cpu(), .double(), .float(): learn the target device and float dtype
        # from a probe, then let C++ move every tensor in place (the Python views stay valid).
        current = next((t.dtype for _, t in self._cpp.state()), torch.float32)
        probe = fn(torch.zeros((), dtype=current))
        if probe.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"hgqt modules compute in float32 or float64, not {probe.dtype}")
        dtype = "" if probe.dtype == current else str(probe.dtype).replace("torch.", "")
        self._cpp.to(str(probe.device), dtype)
        return self

    def extra_repr(self) -> str:
        # C++ pretty_print: "hgqt::QDense(16 -> 8, relu)" -> "16 -> 8, relu".
        s = self._cpp.describe()
        if s.startswith("hgqt::"):
            return s[s.index("(") + 1:-1] if s.endswith(")") and "(" in s else ""
        return s

    def __getstate__(self) -> Any:
        raise TypeError("hgqt modules are not picklable; save them with hgqt.save_checkpoint "
                        "(or model.save) and load them with hgqt.load_checkpoint")

    def __deepcopy__(self, memo: Any) -> Any:
        raise TypeError("hgqt modules cannot be deep-copied; use model.copy() for an hgqt.Model")
