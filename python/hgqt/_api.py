"""hgqt's functions: configs, models, training, checkpoints, trace, archive, emulator, export."""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import torch

from . import _hgqt
from ._model import Model
from ._module import Module, _wrap, as_tensor, json_origin
from .nn import QLayer

Config = _hgqt.Config
Archive = _hgqt.Archive
PathLike = Union[str, "os.PathLike[str]"]


def _json_value(v: Any) -> Any:
    if hasattr(v, "item"):  # numpy / torch scalars
        return v.item()
    if hasattr(v, "tolist"):
        return v.tolist()
    raise TypeError(f"cannot put a {type(v).__name__} into a config")


def _overrides(overrides: Union[None, Mapping[str, Any], Sequence[str]]) -> List[str]:
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [f"{k}={json.dumps(v, default=_json_value)}" for k, v in overrides.items()]
    if isinstance(overrides, str):
        return [overrides]
    return [str(o) for o in overrides]


def load_config(config: Union[PathLike, Mapping[str, Any], "Config"],
                overrides: Union[None, Mapping[str, Any], Sequence[str]] = None) -> "Config":
    """Reads and validates a run config: a YAML file path, a dict with the same structure
    (name, model, data, train), or a Config (returned as is unless overrides are given).

    ``overrides`` are dotted keys, as ``hgqt train --set``: ``{"train.epochs": 3}`` or
    ``["train.epochs=3"]``. Relative data paths of a dict resolve against the working directory.
    Raises ValueError naming the key, line and what was expected.
    """
    ov = _overrides(overrides)
    if isinstance(config, Config):
        if not ov:
            return config
        return _hgqt.parse_config(config.to_yaml(), f"config '{config.name}'", ov,
                                  config.source_path)
    if isinstance(config, Mapping):
        text = json.dumps(dict(config), default=_json_value)
        with json_origin("<dict>"):
            return _hgqt.parse_config(text, "<dict>", ov)
    if isinstance(config, (str, os.PathLike)):
        path = os.fspath(config)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file not found: {path}")
        return _hgqt.load_config(path, ov)
    raise TypeError(f"load_config: expected a path, a dict or an hgqt.Config, got {type(config).__name__}")


def build_model(config: Union[PathLike, Mapping[str, Any], "Config"]) -> Model:
    """A freshly initialised model from a config (anything load_config takes) or from a model
    section alone (a dict with input_shape and layers)."""
    if isinstance(config, Mapping) and "layers" in config and "model" not in config:
        text = json.dumps(dict(config), default=_json_value)
        with json_origin("<model dict>"):
            return _wrap(_hgqt.build_model_yaml(text, "<model dict>"))  # type: ignore[return-value]
    return _wrap(_hgqt.build_model(load_config(config)))  # type: ignore[return-value]


def train(config: Union[PathLike, Mapping[str, Any], "Config", None] = None,
          run_dir: Optional[PathLike] = None, *,
          callback: Optional[Callable[[Dict[str, Any]], Optional[bool]]] = None,
          overrides: Union[None, Mapping[str, Any], Sequence[str]] = None,
          overwrite: bool = False, resume: bool = False, progress: Optional[bool] = None,
          verbose: bool = True) -> Dict[str, Any]:
    """Runs hgqt's C++ trainer on a config, exactly as ``hgqt train`` (the GIL is released while
    it runs, so other Python threads keep going).

    - ``run_dir``: where config.yaml, metrics.jsonl, last.pt, best.pt, resume.pt and pareto/ go
      (default runs/<config name>); an existing run is refused unless ``overwrite``.
    - ``callback(metrics)`` is called after every epoch with a dict (epoch, loss, accuracy,
      val_loss, val_accuracy, ebops, beta, lr, seconds), once that epoch's checkpoints are
      written. Returning False stops the run there (resume.pt is kept); an exception it raises
      ends the run and propagates.
    - ``resume=True`` continues the run in ``run_dir`` (or ``config``, given as the run
      directory) exactly where it stopped. Ctrl-C (KeyboardInterrupt, also a notebook's
      interrupt) saves resume.pt before raising.

    Returns a dict: run_dir, history (one metrics dict per epoch), best_checkpoint, best (its
    metadata), test (samples, loss, accuracy, ebops), anomaly, stopped_early, interrupted, ...
    """
    if resume:
        if run_dir is None:
            if config is None or not isinstance(config, (str, os.PathLike)):
                raise ValueError("hgqt.train(resume=True) needs the run directory")
            run_dir, config = config, None
        if config is not None or overrides or overwrite:
            raise ValueError("resume=True continues a run exactly: config, overrides and "
                             "overwrite do not apply")
        run = os.fspath(run_dir)
        cfg = _hgqt.resume_config(run)
    else:
        if config is None:
            raise ValueError("hgqt.train needs a config (or resume=True and a run directory)")
        cfg = load_config(config, overrides)
        run = os.fspath(run_dir) if run_dir is not None else os.path.join("runs", cfg.name)
        if os.path.exists(os.path.join(run, "last.pt")) and not overwrite:
            raise FileExistsError(
                f"run directory '{run}' already holds a run; choose another run_dir, pass "
                f"overwrite=True, or continue it with hgqt.train('{run}', resume=True)")
    if callback is not None and not callable(callback):
        raise TypeError(f"hgqt.train: callback must be callable, got {type(callback).__name__}")
    if progress is None:
        progress = sys.stderr.isatty()
    sys.stdout.flush()
    sys.stderr.flush()
    # The trainer seeds LibTorch's global generator and may set its thread count: restore both,
    # so that a notebook's own random streams and threads are as they were.
    rng, threads = torch.random.get_rng_state(), torch.get_num_threads()
    try:
        return _hgqt.train(cfg, run, resume, bool(progress), not verbose, callback)
    finally:
        torch.random.set_rng_state(rng)
        torch.set_num_threads(threads)


def load_checkpoint(path: PathLike) -> Model:
    """Loads a checkpoint file, or a run directory's best.pt. The model's ``meta`` holds the
    checkpoint's metadata (epoch, val_accuracy, val_loss, ebops, beta, loss, feature_mean,
    feature_std, config_yaml) and ``checkpoint_path`` the file read."""
    cpp, meta, resolved = _hgqt.load_checkpoint(os.fspath(path))
    model = _wrap(cpp)
    object.__setattr__(model, "_meta", meta)
    object.__setattr__(model, "checkpoint_path", resolved)
    return model  # type: ignore[return-value]


def save_checkpoint(model: Model, path: PathLike, **meta: Any) -> str:
    """Writes ``model`` as an hgqt checkpoint (atomically), readable by hgqt.load_checkpoint and
    every ``hgqt`` command. Metadata: the model's own ``meta`` (when loaded), then ``meta``."""
    _check_model(model, "save_checkpoint")
    full = dict(model.meta or {})
    full.update(meta)
    out = os.fspath(path)
    _hgqt.save_checkpoint(out, model._cpp, full)
    return out


def _check_model(model: Any, what: str) -> None:
    if not isinstance(model, Model):
        raise TypeError(f"hgqt.{what}: expected an hgqt.Model (hgqt.build_model, "
                        f"hgqt.load_checkpoint or hgqt.Sequential), got {type(model).__name__}")


def trace(model: Model, data: Any, batch_size: int = 4096) -> Dict[str, Any]:
    """Calibrates the activation quantizers on ``data`` ([N, *input_shape], as the model sees
    it, i.e. standardized when the model was trained with standardize: true): each gets the sign and the fewest integer bits that hold the values it sees, so that no
    calibration input overflows in hardware (quantization.md section 4). Changes the model in
    place, leaves it in eval mode, and returns what it did (samples, passes, widened, narrowed,
    sign_dropped, ebops_before, exact_ebops). The model remembers the trace for to_archive and
    export; training it further afterwards makes that record stale (trace again)."""
    _check_model(model, "trace")
    x = as_tensor(data)
    if x.dim() < 2 or list(x.shape[1:]) != list(model.input_shape):
        raise ValueError(f"hgqt.trace: data must be [samples, *{model.input_shape}], got shape "
                         f"{list(x.shape)}")
    r = _hgqt.trace(model._cpp, x, int(batch_size))
    object.__setattr__(model, "_trace_info", {"samples": r["samples"],
                                              "exact_ebops": r["exact_ebops"],
                                              "data": "python"})
    return r


def to_archive(model: Model, name: str = "model") -> "Archive":
    """The model archive of a model (eval semantics, exact integers): what the emulator and every
    exporter read. Records the model's standardization and trace when it has them."""
    _check_model(model, "to_archive")
    trace_info = model.trace_info
    meta = model.meta
    return _hgqt.to_archive(model._cpp, None if meta is None else dict(meta), name,
                            None if trace_info is None else dict(trace_info))


def load_archive(path: PathLike) -> "Archive":
    """Reads an archive directory written by ``hgqt trace``, ``archive.save`` or hgqt.export."""
    return _hgqt.read_archive(os.fspath(path))


def from_archive(archive: Union["Archive", PathLike]) -> Model:
    """Rebuilds a trainable model from an archive (its recorded model section), every quantizer
    and constant set so that the model's eval outputs equal the archive's exactly."""
    a = archive if isinstance(archive, Archive) else load_archive(archive)
    model = _wrap(_hgqt.from_archive(a))
    if a.trace["traced"]:
        object.__setattr__(model, "_trace_info", dict(a.trace))
    return model  # type: ignore[return-value]


def _archive_of(obj: Any, what: str) -> "Archive":
    if isinstance(obj, Archive):
        return obj
    if isinstance(obj, Model):
        return to_archive(obj)
    if isinstance(obj, (str, os.PathLike)):
        return load_archive(obj)
    raise TypeError(f"hgqt.{what}: expected an hgqt.Model, an hgqt.Archive or an archive path, "
                    f"got {type(obj).__name__}")


def emulate(archive: Union["Archive", Model, PathLike], x: Any, *, preprocess: bool = True,
            return_stats: bool = False) -> Any:
    """Runs the integer emulator (the bit-exact reference of the hardware) on ``x`` ([N, ...]
    raw features; the archive's standardization is applied first unless ``preprocess=False``).

    Returns float64 outputs [N, outputs]: a numpy array for numpy input, a tensor otherwise.
    With ``return_stats`` also a dict: samples, wrapped, saturated (overflow counts).
    """
    a = _archive_of(archive, "emulate")
    is_numpy = type(x).__module__ == "numpy"
    t = as_tensor(x, torch.float64)
    y, stats = _hgqt.emulate(a, t, bool(preprocess))
    out = y.numpy() if is_numpy else y
    return (out, stats) if return_stats else out


_UNTRACED = ("the archive is not traced: its activation integer bits and signs were never "
             "calibrated, so the hardware may wrap on real data and the widths are not minimal. "
             "Run hgqt.trace(model, data) first, or pass allow_untraced=True")


def export(model: Union[Model, "Archive", PathLike], out: PathLike, format: str = "hls", *,
           name: str = "myproject", tb_inputs: Any = None, tb_samples: int = 1000,
           allow_untraced: bool = False, part: str = "",
           clock_ns: Optional[float] = None, pipeline_stages: Optional[int] = None,
           const_mult: str = "shared",
           adder_depth: int = 2,
           allow_widening: bool = False, rnd_as_offset_floor: bool = False,
           include_preprocessing: bool = True) -> Any:
    """Exports a traced model (or archive) as ``format``:

    - "hls": a Vitis/Vivado HLS project with ap_fixed types and a C-simulation testbench;
    - "catapult", "oneapi": the same design with ac_fixed types, as a Siemens Catapult project
      (build_prj.tcl) or an Intel oneAPI CMake project (``part``: "" is each format's default);
    - "verilog": RTL with a Verilator testbench (``const_mult`` shared, csd or mul;
      ``adder_depth``: the adder levels sharing may add). Registers: ``pipeline_stages`` (the
      latency, default 1) or ``clock_ns`` (registers placed by estimated delay for that clock
      period; the latency follows), not both;
    - "qonnx": a QONNX file (returns the report: nodes, quant_nodes, widened_elements, notes);
    - "archive": the model archive directory (model.json + tensors.h5).

    ``tb_inputs`` ([N, ...] raw features) become the testbench's samples, with the emulator's
    outputs as the expected values; by default ``tb_samples`` standard-normal inputs (seed 1),
    the same as ``hgqt export`` without --tb-data.
    An untraced model is refused unless ``allow_untraced``. Returns the output path (qonnx: the
    report dict with "path").
    """
    a = _archive_of(model, "export")
    path = os.fspath(out)
    fmt = format.lower()
    if fmt not in ("hls", "catapult", "oneapi", "verilog", "qonnx", "archive"):
        raise ValueError("hgqt.export: format must be hls, catapult, oneapi, verilog, qonnx or "
                         f"archive, got '{format}'")
    if not a.trace["traced"] and not allow_untraced:
        raise ValueError(f"hgqt.export: {_UNTRACED}")
    if fmt == "archive":
        a.save(path)
        return path
    if fmt == "qonnx":
        report = _hgqt.export_qonnx(a, path, allow_widening, rnd_as_offset_floor,
                                    include_preprocessing)
        report["path"] = path
        return report
    tb = None if tb_inputs is None else as_tensor(tb_inputs, torch.float64)
    if fmt in ("hls", "catapult", "oneapi"):
        _hgqt.export_hls(a, path, name, part, 5.0 if clock_ns is None else float(clock_ns), tb,
                         int(tb_samples), fmt)
    else:
        if clock_ns is not None and pipeline_stages is not None:
            raise ValueError("hgqt.export: give clock_ns (registers placed for a clock period) or "
                             "pipeline_stages (a latency) for verilog, not both")
        _hgqt.export_verilog(a, path, name, 1 if pipeline_stages is None else int(pipeline_stages),
                             const_mult, tb, int(tb_samples), int(adder_depth),
                             0.0 if clock_ns is None else float(clock_ns))
    return path


def summary(model: Model, as_frame: Optional[bool] = None) -> Any:
    """Per layer: name, type, shape, parameters, weight and activation bits (mean, min, max),
    zero_weight_share and EBOPs. A pandas DataFrame when pandas is installed (or
    ``as_frame=True``), else a list of dicts. ``print(hgqt.format_summary(model))`` prints the
    same table as ``hgqt train``."""
    _check_model(model, "summary")
    rows = _hgqt.summarize(model._cpp)
    if as_frame is False:
        return rows
    try:
        import pandas as pd  # optional
    except ImportError:
        if as_frame:
            raise ImportError("hgqt.summary(as_frame=True) needs pandas (apt-get install python3-pandas)")
        return rows
    return pd.DataFrame(rows)


def format_summary(model: Model) -> str:
    """The summary as the fixed-width text table ``hgqt train`` prints."""
    _check_model(model, "format_summary")
    return _hgqt.format_summary(model._cpp)


def _hgqt_parts(module: torch.nn.Module):
    """The outermost hgqt models and layers inside any torch.nn.Module."""
    if isinstance(module, (Model, QLayer)):
        yield module
        return
    for child in module.children():
        yield from _hgqt_parts(child)


def ebops(module: torch.nn.Module) -> torch.Tensor:
    """Differentiable EBOPs of any torch.nn.Module holding hgqt layers or models (for example a
    torch.nn.Sequential of hgqt.nn layers): the sum over them."""
    total = None
    for part in _hgqt_parts(module):
        v = part.ebops()
        total = v if total is None else total + v
    if total is None:
        raise ValueError(f"hgqt.ebops: {type(module).__name__} holds no hgqt layers")
    return total


def constrain(module: torch.nn.Module) -> None:
    """Projects the bit widths of every hgqt layer inside ``module`` into their bounds; call it
    after each optimizer.step() of a Python training loop (hgqt.train does it itself)."""
    for part in _hgqt_parts(module):
        part.constrain()
