"""hgqt: High Granularity Quantization-aware training in C++ (LibTorch), from Python.

Models, layers and quantizers are torch.nn.Modules whose tensors are the C++ modules' own, so
PyTorch code (torch.optim, autograd, state_dict) works on them directly::

    import hgqt, torch
    model = hgqt.build_model("configs/fashion_mnist.yaml")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = torch.nn.functional.cross_entropy(model(x), y) + 1e-6 * model.ebops()
    loss.backward(); opt.step(); model.constrain()

    result = hgqt.train("configs/fashion_mnist.yaml", "runs/nb", callback=print)
    best = hgqt.load_checkpoint(result["best_checkpoint"])
    hgqt.trace(best, x_calibration)
    hgqt.export(best, "hls_prj", format="hls")
    y = hgqt.emulate(hgqt.to_archive(best), x)   # bit-exact with the exported hardware

Errors from C++ arrive as ValueError (bad arguments, configs, data) or RuntimeError, with the
C++ message.
"""
import torch as _torch  # noqa: F401  (loads libtorch_python before the extension)

from . import _hgqt
from . import nn
from ._api import (Archive, Config, build_model, constrain, ebops, emulate, export,
                   format_summary, from_archive, load_archive, load_checkpoint, load_config, save_checkpoint,
                   summary, to_archive, trace, train)
from ._model import Model, Sequential

# QLutDense is a block of layers (a small Model), so it lives beside Model; it is an hgqt.nn layer.
from ._model import QLutDense as _QLutDense
nn.QLutDense = _QLutDense
nn.__all__.append("QLutDense")

__version__: str = _hgqt.__version__

__all__ = [
    "Archive", "Config", "Model", "Sequential", "build_model", "constrain", "ebops", "emulate",
    "export", "format_summary", "from_archive", "load_archive", "load_checkpoint", "load_config", "nn",
    "save_checkpoint", "summary", "to_archive", "trace", "train", "__version__",
]
