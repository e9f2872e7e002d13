"""Per-row activation quantization for ONNX Runtime's dynamic int8 graphs.

ORT's ``quantize_dynamic`` puts a ``DynamicQuantizeLinear`` before each quantized
``MatMul``: one scale and zero point from the min and max of the whole batch. A row's
score then depends on the rows scored beside it: one outlier row coarsens every other
row's quantization, and the same rows grouped into other batches (another partitioning,
another cluster size) score differently. :func:`per_row_activations` rewrites each such
block so every row (every token, for 3-D activations) is quantized with its own range
over the last axis, with ``DynamicQuantizeLinear``'s rounding and saturation.

The block ORT writes, and what it becomes::

    q, s, z = DynamicQuantizeLinear(x)         per row: s, z from x's min/max over the
    sw = Mul(s, w_scale)                       last axis; q = QuantizeLinear(x, s, z)
    y = Mul(Cast(MatMulInteger(q, W, z, wz)),  u = MatMulIntegerToFloat(q, W, 1, w_scale,
            sw)                                                        0, wz)
                                               y = (u - z * colsum(W - wz) * w_scale) * s

``MatMulInteger`` and ``MatMulIntegerToFloat`` on CPU take only a scalar zero point for
``A``, so the rows' zero points are subtracted after the product:
``(q - z) @ W = q @ W - z * colsum(W)``. A ReLU's output is never negative, so its zero
point is 0 and needs no correction. The per-row scale is applied by its own ``Mul``: ORT
would fuse ``Cast -> Mul(Mul(a_scale, b_scale))`` into ``MatMulIntegerToFloat`` and read a
per-row ``a_scale`` as per-column (wrong scores), so that shape is never written.

On a CPU this costs speed against ORT's per-batch kernel, measured on one thread: the
MLP of ``runs/bench_tabular`` (124 inputs) at 10,000 rows 14.7 ms against 6.2 (fp32
7.0); MiniLM at 64 x 48 tokens 685 ms against 514 (fp32 840). The compress gate's latency
figures are of this graph.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def per_row_activations(path: str | Path) -> int:
    """Rewrite ``path`` in place; return the number of ``DynamicQuantizeLinear`` nodes
    made per row. One whose consumers are not the quantizer's pattern (constant weights,
    scale ``Mul``, ``Cast``, scale ``Mul``) is left as it is, with a warning."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    path = Path(path)
    model = onnx.load(str(path))
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    inits = {t.name: t for t in graph.initializer}
    producer = {out: n for n in graph.node for out in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)

    def const(name: str, value: np.ndarray) -> str:
        graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs: Any) -> Any:
        return helper.make_node(op, inputs, [output], **attrs)

    def reduce(op: str, x: str, out: str, axes: str) -> Any:
        # ReduceMin/Max take their axes as an input from opset 18, as an attribute before.
        if opset >= 18:
            return node(op, [x, axes], out, keepdims=1)
        return node(op, [x], out, axes=[-1], keepdims=1)

    def chain(mm: Any, s: str) -> tuple[Any, Any, Any, str] | None:
        """(Cast, scale Mul of s, output Mul, w_scale) after one MatMulInteger, or None."""
        cast = consumers.get(mm.output[0], [])
        if len(cast) != 1 or cast[0].op_type != "Cast" or mm.input[1] not in inits:
            return None
        out = consumers.get(cast[0].output[0], [])
        if len(out) != 1 or out[0].op_type != "Mul":
            return None
        sw = next((v for v in out[0].input if v != cast[0].output[0]), "")
        mul = producer.get(sw)
        if mul is None or mul.op_type != "Mul" or s not in mul.input:
            return None
        w_scale = next((v for v in mul.input if v != s), "")
        if w_scale not in inits or len(consumers.get(sw, [])) != 1:
            return None
        return cast[0], mul, out[0], w_scale

    # Nodes are keyed by their first output's name (protobuf wrappers are not stable
    # objects): `instead` replaces a node, `dropped` goes.
    instead: dict[str, list[Any]] = {}
    dropped: set[str] = set()
    for dq in graph.node:
        if dq.op_type != "DynamicQuantizeLinear" or dq.domain not in ("", "ai.onnx"):
            continue
        x, (q, s, z) = dq.input[0], dq.output
        matmuls = [n for n in consumers.get(q, []) if n.op_type == "MatMulInteger"]
        chains = [chain(mm, s) for mm in matmuls]
        n_uses = sum(len(consumers.get(v, [])) for v in (q, s, z))
        if not matmuls or None in chains or n_uses != 3 * len(matmuls) or any(
                mm.input[0] != q or mm.input[2] != z for mm in matmuls):
            log.warning("%s: %s is not ORT's dynamic MatMul block; its activations stay "
                        "quantized per batch", path, dq.name or x)
            continue
        p = f"{dq.name or x}_per_row"
        k_in = numpy_helper.to_array(inits[matmuls[0].input[1]]).shape[0]
        const(f"{p}_axes", np.array([-1], np.int64))
        const(f"{p}_qmax", np.array(255.0, np.float32))
        const(f"{p}_tiny", np.array(np.finfo(np.float32).tiny, np.float32))
        const(f"{p}_a_zp", np.array(0, np.uint8))
        const(f"{p}_one", np.array(1.0, np.float32))
        const(f"{p}_flat", np.array([-1], np.int64))
        const(f"{p}_rows", np.array([-1, k_in], np.int64))
        nonneg = getattr(producer.get(x), "op_type", "") == "Relu"
        if nonneg:
            block = [reduce("ReduceMax", x, f"{p}_hi", f"{p}_axes"),
                     node("Div", [f"{p}_hi", f"{p}_qmax"], f"{p}_scale")]
        else:
            const(f"{p}_zero", np.array(0.0, np.float32))
            block = [
                reduce("ReduceMin", x, f"{p}_min", f"{p}_axes"),
                reduce("ReduceMax", x, f"{p}_max", f"{p}_axes"),
                # The range always includes 0, as DynamicQuantizeLinear's does.
                node("Min", [f"{p}_min", f"{p}_zero"], f"{p}_lo"),
                node("Max", [f"{p}_max", f"{p}_zero"], f"{p}_hi"),
                node("Sub", [f"{p}_hi", f"{p}_lo"], f"{p}_range"),
                node("Div", [f"{p}_range", f"{p}_qmax"], f"{p}_scale"),
            ]
        # An all-zero row has scale 0: divide by the smallest normal float instead (its
        # codes are then all 0 and its product 0, as they should be).
        block.append(node("Max", [f"{p}_scale", f"{p}_tiny"], f"{p}_div"))
        q_inputs = [f"{p}_x2", f"{p}_div1"]
        if not nonneg:
            block += [
                node("Neg", [f"{p}_lo"], f"{p}_neg_lo"),
                node("Div", [f"{p}_neg_lo", f"{p}_div"], f"{p}_zf0"),
                node("Round", [f"{p}_zf0"], f"{p}_zf1"),
                node("Clip", [f"{p}_zf1", f"{p}_zero", f"{p}_qmax"], f"{p}_zf"),
                node("Cast", [f"{p}_zf"], f"{p}_zu", to=TensorProto.UINT8),
                node("Reshape", [f"{p}_zu", f"{p}_flat"], f"{p}_zu1"),
            ]
            q_inputs.append(f"{p}_zu1")
        # QuantizeLinear rounds and saturates as DynamicQuantizeLinear does, in one pass,
        # with one scale per row along axis 0 of a 2-D view (no zero point: uint8, 0).
        block += [
            node("Reshape", [f"{p}_div", f"{p}_flat"], f"{p}_div1"),
            node("Reshape", [x, f"{p}_rows"], f"{p}_x2"),
            node("QuantizeLinear", q_inputs, f"{p}_q2", axis=0),
            node("Shape", [x], f"{p}_shape"),
            node("Reshape", [f"{p}_q2", f"{p}_shape"], f"{p}_q"),
        ]
        instead[q] = block
        for k, (mm, found) in enumerate(zip(matmuls, chains, strict=True)):
            assert found is not None
            cast, mul, out, w_scale = found
            # ORT's fused integer GEMM with float output, per-column weight scale, a_scale 1
            # and A's zero point 0: the rows' own scales and zero points follow.
            u, y = f"{p}_u{k}", out.output[0]
            b_zp = mm.input[3] if len(mm.input) > 3 else ""
            instead[mm.output[0]] = [helper.make_node(
                "MatMulIntegerToFloat",
                [f"{p}_q", mm.input[1], f"{p}_one", w_scale, f"{p}_a_zp", b_zp], [u],
                domain="com.microsoft")]
            dropped.update({mul.output[0], cast.output[0]})
            if nonneg:
                instead[y] = [node("Mul", [u, f"{p}_scale"], y)]
                continue
            w = numpy_helper.to_array(inits[mm.input[1]]).astype(np.int64)
            wz = numpy_helper.to_array(inits[b_zp]).astype(np.int64) if b_zp else np.int64(0)
            ws = numpy_helper.to_array(inits[w_scale]).astype(np.float64)
            # (q - z) @ W * ws = q @ W * ws - z * (colsum(W) * ws)
            cw = const(f"{p}_cw{k}", ((w - wz).sum(axis=0) * ws).astype(np.float32))
            instead[y] = [node("Mul", [f"{p}_zf", cw], f"{p}_corr{k}"),
                          node("Sub", [u, f"{p}_corr{k}"], f"{p}_uc{k}"),
                          node("Mul", [f"{p}_uc{k}", f"{p}_scale"], y)]
    if not instead:
        return 0
    ordered: list[Any] = []
    for n in graph.node:
        if n.output[0] in dropped:
            continue
        ordered.extend(instead.get(n.output[0], [n]))
    del graph.node[:]
    graph.node.extend(ordered)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    n_done = sum(1 for v in instead.values() if v[-1].op_type == "Reshape")
    log.info("%s: %d dynamic activation quantizations made per row", path, n_done)
    return n_done
