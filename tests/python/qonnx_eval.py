"""A small numpy evaluator for the QONNX graphs hgqt writes (tests only).

Ops: Quant (qonnx.custom_op.general), MatMul, Add, Sub, Div, Mul, Relu, Flatten, Identity,
Reshape, Transpose, Concat, Slice, Conv, MaxPool, AveragePool, for lut layers Mod, Cast (to
int64), Max, Min, Gather, and for softmax layers ReduceMax, ReduceSum and Cast (to float)
(opset 13; Conv without groups or dilations, the pools without pads or ceil_mode, as hgqt
writes them). Integer tensors (Cast to int64, int64 initializers) stay int64.
Quant follows QONNX's reference implementation (qonnx.custom_op.general.quant): scale, add the
zero point, clamp to the integer range of (bitwidth, signed, narrow), round, undo the zero point,
rescale; a signed 1-bit Quant is bipolar (+-1) there, and so it is here.

`run(model, x, dtype)` evaluates in `dtype`. float64 is exact for the widths hgqt's tests use,
so it gives the graph's real-number semantics; float32 is what an ONNX runtime would do. Sub and
Div (the archive's preprocessing) are float32 operations by definition and always run in float32.
"""

import numpy as np
import onnx
from onnx import helper, numpy_helper

QONNX_DOMAIN = "qonnx.custom_op.general"


def round_qonnx(y, mode):
    """QONNX's rounding modes (the table of the IntQuant / Quant op documentation)."""
    m = mode.upper()
    if m in ("ROUND", "HALF_EVEN"):
        return np.round(y)  # half to even
    if m == "FLOOR":
        return np.floor(y)
    if m == "CEIL":
        return np.ceil(y)
    if m == "UP":  # away from zero
        return np.sign(y) * np.ceil(np.abs(y))
    if m == "DOWN":  # toward zero
        return np.trunc(y)
    if m == "HALF_UP":  # ties away from zero
        return np.sign(y) * np.floor(np.abs(y) + 0.5)
    if m == "HALF_DOWN":  # ties toward zero
        return np.sign(y) * np.ceil(np.abs(y) - 0.5)
    raise ValueError(f"unknown QONNX rounding mode {mode!r}")


def int_range(bitwidth, signed, narrow):
    """The clamp bounds of QONNX's min_int / max_int."""
    b = int(bitwidth)
    if signed:
        lo = -(2 ** (b - 1)) + (1 if narrow else 0)
        hi = 2 ** (b - 1) - 1
    else:
        lo = 0
        hi = 2**b - 1 - (1 if narrow else 0)
    return lo, hi


def quant(x, scale, zeropt, bitwidth, signed, narrow, rounding_mode):
    """QONNX Quant: clamp, then round (the bounds are integers, so the order does not matter)."""
    bits = float(np.asarray(bitwidth))
    if bits != int(bits) or bits < 1:
        raise ValueError(f"Quant bit width {bits} is not a positive integer")
    y = x / scale + zeropt
    if int(bits) == 1 and signed:
        y = np.where(y >= 0, 1.0, -1.0).astype(y.dtype)
    else:
        lo, hi = int_range(bits, signed, narrow)
        y = np.clip(y, lo, hi)
        y = round_qonnx(y, rounding_mode)
    return ((y - zeropt) * scale).astype(x.dtype)


def _windows(x, kernel, strides):
    """For [N, C, S...] `x`: yields (kernel position, the strided view of the input each output
    position reads at that kernel position), each [N, C, O...]."""
    r = x.ndim - 2
    out = [(x.shape[2 + d] - kernel[d]) // strides[d] + 1 for d in range(r)]
    if min(out) < 1:
        raise ValueError(f"window {kernel} larger than the input {x.shape[2:]}")
    for kpos in np.ndindex(*kernel):
        sl = tuple(slice(kpos[d], kpos[d] + strides[d] * (out[d] - 1) + 1, strides[d])
                   for d in range(r))
        yield kpos, x[(slice(None), slice(None)) + sl]


def conv(x, w, b, at):
    """ONNX Conv (group 1, dilation 1): x [N, C, S...], w [F, C, K...], b [F]."""
    r = x.ndim - 2
    kernel = list(at.get("kernel_shape", w.shape[2:]))
    if list(w.shape[2:]) != kernel:
        raise ValueError(f"Conv kernel_shape {kernel} disagrees with W {w.shape}")
    if at.get("group", 1) != 1 or any(d != 1 for d in at.get("dilations", [1] * r)):
        raise NotImplementedError("Conv with groups or dilations")
    if at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise NotImplementedError("Conv auto_pad")
    strides = list(at.get("strides", [1] * r))
    pads = list(at.get("pads", [0] * (2 * r)))
    if min(pads) < 0:
        raise ValueError(f"negative Conv pads {pads}")
    x = np.pad(x, [(0, 0), (0, 0)] + [(pads[d], pads[r + d]) for d in range(r)])
    y = None
    for kpos, patch in _windows(x, kernel, strides):
        term = np.einsum("nc...,fc->nf...", patch, w[(slice(None), slice(None)) + kpos])
        y = term if y is None else y + term
    if b is not None:
        y = y + b.reshape((-1,) + (1,) * r)
    return y.astype(x.dtype)


def pool(x, at, op):
    """ONNX MaxPool / AveragePool without padding (floor mode): x [N, C, S...]."""
    r = x.ndim - 2
    if any(at.get("pads", [0] * (2 * r))) or at.get("ceil_mode", 0):
        raise NotImplementedError(f"{op} with pads or ceil_mode")
    if any(d != 1 for d in at.get("dilations", [1] * r)):
        raise NotImplementedError(f"{op} with dilations")
    kernel = list(at["kernel_shape"])
    strides = list(at.get("strides", [1] * r))
    y = None
    for _, patch in _windows(x, kernel, strides):
        if y is None:
            y = patch.copy()
        elif op == "MaxPool":
            y = np.maximum(y, patch)
        else:
            y = y + patch
    if op == "AveragePool":
        y = y / np.prod(kernel)
    return y.astype(x.dtype)


def reshape(x, shape):
    """ONNX Reshape (allowzero 0): 0 copies the input's dimension, -1 is inferred."""
    dims = [int(x.shape[d]) if int(s) == 0 else int(s) for d, s in enumerate(shape)]
    return x.reshape(dims)


def slice_(x, starts, ends, axes=None, steps=None):
    axes = range(len(starts)) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    sl = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        sl[int(a)] = slice(int(s), int(e), int(st))
    return x[tuple(sl)]


def _attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def run(model, x, dtype=np.float64):
    """Evaluates the model's graph on `x` ([batch, ...]); returns the graph output."""
    g = model.graph
    env = {}
    for t in g.initializer:
        v = numpy_helper.to_array(t)
        env[t.name] = v if v.dtype.kind in "iu" else v.astype(dtype)  # shapes, Slice bounds
    if len(g.input) != 1 or len(g.output) != 1:
        raise ValueError("expected one graph input and one graph output")
    # Rows of `x` are flat (row-major) samples; give them the declared per-sample shape.
    dims = [d.dim_value for d in g.input[0].type.tensor_type.shape.dim[1:]]
    x = np.asarray(x, dtype=np.float32)
    env[g.input[0].name] = x.reshape([x.shape[0]] + dims).astype(dtype)
    for node in g.node:
        ins = [env[name] for name in node.input]
        at = _attrs(node)
        op = node.op_type
        if node.domain == QONNX_DOMAIN and op == "Quant":
            rounding = at.get("rounding_mode", b"ROUND")
            if isinstance(rounding, bytes):
                rounding = rounding.decode()
            out = quant(ins[0], ins[1], ins[2], ins[3], at.get("signed", 1), at.get("narrow", 0),
                        rounding)
        elif node.domain not in ("", "ai.onnx"):
            raise NotImplementedError(f"{node.domain}.{op}")
        elif op == "MatMul":
            out = ins[0] @ ins[1]
        elif op == "Add":
            out = ins[0] + ins[1]
        elif op == "Mul":
            out = ins[0] * ins[1]
        elif op == "Sub":
            out = (ins[0].astype(np.float32) - ins[1].astype(np.float32)).astype(dtype)
        elif op == "Div":
            out = (ins[0].astype(np.float32) / ins[1].astype(np.float32)).astype(dtype)
        elif op == "Relu":
            out = np.maximum(ins[0], 0).astype(dtype)
        elif op == "Flatten":
            axis = at.get("axis", 1)
            out = ins[0].reshape(int(np.prod(ins[0].shape[:axis])), -1)
        elif op == "Identity":
            out = ins[0]
        elif op == "Reshape":
            out = reshape(ins[0], ins[1])
        elif op == "Transpose":
            out = np.transpose(ins[0], at["perm"])
        elif op == "Concat":
            out = np.concatenate(ins, axis=at["axis"])
        elif op == "Slice":
            out = slice_(*ins)
        elif op == "Mod":
            if at.get("fmod", 0) == 1:
                out = np.fmod(ins[0], ins[1])  # C fmod: the dividend's sign (exact)
            else:
                if ins[0].dtype.kind not in "iu" or ins[1].dtype.kind not in "iu":
                    raise ValueError("ONNX Mod with fmod=0 is for integers only")
                out = np.mod(ins[0], ins[1])  # the divisor's sign
        elif op == "Cast":
            if at["to"] == onnx.TensorProto.INT64:
                if ins[0].dtype.kind == "f" and not np.all(ins[0] == np.round(ins[0])):
                    raise ValueError(f"{node.name}: Cast to int64 of a non-integer value")
                out = ins[0].astype(np.int64)
            elif at["to"] == onnx.TensorProto.FLOAT:
                # float32 by definition; carried in the evaluation dtype afterwards
                out = ins[0].astype(np.float32).astype(dtype)
            else:
                raise NotImplementedError(f"Cast to {at['to']}")
        elif op in ("ReduceMax", "ReduceSum"):
            # Opset 13: ReduceMax takes `axes` as an attribute, ReduceSum as an optional second
            # input (empty or absent: every axis, or the input unchanged when
            # noop_with_empty_axes=1); keepdims defaults to 1.
            axes = at.get("axes") if op == "ReduceMax" else (ins[1] if len(ins) > 1 else None)
            if axes is not None and len(axes) == 0:
                axes = None
            if axes is None and op == "ReduceSum" and at.get("noop_with_empty_axes", 0) == 1:
                out = ins[0]
            else:
                rank = ins[0].ndim
                ax = tuple(range(rank)) if axes is None else tuple(int(a) % rank for a in axes)
                f = np.max if op == "ReduceMax" else np.sum
                out = f(ins[0], axis=ax, keepdims=bool(at.get("keepdims", 1)))
        elif op in ("Max", "Min"):
            f = np.maximum if op == "Max" else np.minimum
            out = ins[0]
            for other in ins[1:]:
                out = f(out, other)
        elif op == "Gather":
            idx = ins[1]
            if idx.dtype.kind not in "iu":
                raise ValueError(f"{node.name}: Gather indices must be integers")
            n = ins[0].shape[at.get("axis", 0)]
            if idx.size and (idx.min() < -n or idx.max() >= n):
                raise IndexError(f"{node.name}: Gather index outside [-{n}, {n})")
            out = np.take(ins[0], idx, axis=at.get("axis", 0))
        elif op == "Conv":
            out = conv(ins[0], ins[1], ins[2] if len(ins) > 2 else None, at)
        elif op in ("MaxPool", "AveragePool"):
            out = pool(ins[0], at, op)
        else:
            raise NotImplementedError(op)
        env[node.output[0]] = out
    return env[g.output[0].name]
