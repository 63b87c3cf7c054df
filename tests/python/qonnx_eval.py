"""A small numpy evaluator for the QONNX graphs hgqt writes (tests only).

Ops: Quant (qonnx.custom_op.general), MatMul, Add, Sub, Div, Mul, Relu, Flatten, Identity.
Quant follows QONNX's reference implementation (qonnx.custom_op.general.quant): scale, add the
zero point, clamp to the integer range of (bitwidth, signed, narrow), round, undo the zero point,
rescale; a signed 1-bit Quant is bipolar (+-1) there, and so it is here.

`run(model, x, dtype)` evaluates in `dtype`. float64 is exact for the widths hgqt's tests use,
so it gives the graph's real-number semantics; float32 is what an ONNX runtime would do. Sub and
Div (the archive's preprocessing) are float32 operations by definition and always run in float32.
"""

import numpy as np
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


def _attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def run(model, x, dtype=np.float64):
    """Evaluates the model's graph on `x` ([batch, ...]); returns the graph output."""
    g = model.graph
    env = {t.name: numpy_helper.to_array(t).astype(dtype) for t in g.initializer}
    if len(g.input) != 1 or len(g.output) != 1:
        raise ValueError("expected one graph input and one graph output")
    env[g.input[0].name] = np.asarray(x, dtype=np.float32).astype(dtype)
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
        else:
            raise NotImplementedError(op)
        env[node.output[0]] = out
    return env[g.output[0].name]
