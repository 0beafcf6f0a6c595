"""Per-node descriptions of a kmodel v4 for the printed layer table: shapes, memory ranges, MACs, weight bytes.

One small function per opcode (DESCRIBERS); nodes without one show their memory ranges and element counts.
"""
from ..chip.kpu import ACT_TABLE_BYTES
from .structs import BINARY_OPS, REDUCE_OPS, RESIZE_MODES, UNARY_OPS, struct

RANGE = struct("memory_range")


def describe_io(node, in_shape=None, out_shape=None):
    """The node's memory ranges as 'inputs -> outputs', with element counts as shapes when none are given."""
    fields = [f.name for f in type(node.body).__fields__ if f.type is RANGE]
    ins = [node.range(f) for f in fields if f not in ("output", "main_mem_output", "table")]
    outs = [node.range(f) for f in fields if f in ("output", "main_mem_output") and not node.range(f).absent]
    if node.name == "concat":
        ins = list(node.extra["inputs"])
    memory = f"{' '.join(map(str, ins))} -> {' '.join(map(str, outs))}"
    if in_shape is None and ins:
        in_shape = (ins[0].size // max(1, ins[0].itemsize),)
    if out_shape is None and outs:
        out_shape = (outs[0].size // max(1, outs[0].itemsize),)
    return {"input": in_shape, "output": out_shape, "memory": memory}


def windowed(size, filt, stride, dilation, before, after):
    """nncase's get_windowed_output_size (C division, truncating toward zero), clamped at 0."""
    span = size + before + after - ((filt - 1) * dilation + 1) + stride
    return max(0, span // stride) if span >= 0 else 0


def _describe_conv(node):
    b = node.body
    n, c, h, w = node.shape("in_shape")
    oh = windowed(h, b.filter_h, b.stride_h, b.dilation_h, b.padding_h.before, b.padding_h.after)
    ow = windowed(w, b.filter_w, b.stride_w, b.dilation_w, b.padding_w.before, b.padding_w.after)
    oc = b.out_channels
    macs = n * oc * oh * ow * (c // b.groups) * b.filter_h * b.filter_w
    weights = node.extra["weights"].nbytes + node.extra["bias"].nbytes
    info = describe_io(node, (n, c, h, w), (n, oc, oh, ow))
    info.update(macs=macs, weights=weights, detail=f"{b.filter_h}x{b.filter_w} s{b.stride_h} groups={b.groups}")
    return info


def _describe_cpu_conv(node):
    b = node.body
    n, h, w, c = node.shape("in_shape")
    oh = windowed(h, b.filter_h, b.stride_h, b.dilation_h, b.padding_h.before, b.padding_h.after)
    ow = windowed(w, b.filter_w, b.stride_w, b.dilation_w, b.padding_w.before, b.padding_w.after)
    depthwise = "depthwise" in node.name
    oc = c if depthwise else b.out_channels
    macs = n * oc * oh * ow * b.filter_h * b.filter_w * (1 if depthwise else c)
    info = describe_io(node, (n, h, w, c), (n, oh, ow, oc))
    info.update(macs=macs, weights=node.extra["weights"].nbytes + node.extra["bias"].nbytes,
                detail=f"NHWC {b.filter_h}x{b.filter_w} s{b.stride_h}")
    return info


def _describe_window(node):
    b = node.body
    if node.name == "cpu_reduce_window2d":
        n, h, w, c = node.shape("in_shape")
    else:
        n, c, h, w = node.shape("in_shape")
    oh = windowed(h, b.filter_h, b.stride_h, b.dilation_h, b.padding_h.before, b.padding_h.after)
    ow = windowed(w, b.filter_w, b.stride_w, b.dilation_w, b.padding_w.before, b.padding_w.after)
    shape = (n, oh, ow, c) if node.name == "cpu_reduce_window2d" else (n, c, oh, ow)
    info = describe_io(node, node.shape("in_shape"), shape)
    info["detail"] = f"{REDUCE_OPS.get(b.reduce_op)} {b.filter_h}x{b.filter_w} s{b.stride_h}"
    return info


def _describe_binary(node):
    b = node.body
    a, bb = node.shape("in_a_shape"), node.shape("in_b_shape")
    info = describe_io(node, a, a if a == bb else node.shape("out_shape"))
    info["detail"] = f"{BINARY_OPS.get(b.binary_op)} with {'x'.join(map(str, bb))}"
    return info


def _describe_matmul(node):
    b = node.body
    info = describe_io(node, (b.a_rows, b.a_cols), (b.a_rows, b.b_cols))
    info.update(macs=b.a_rows * b.a_cols * b.b_cols, weights=node.extra["bias"].nbytes)
    return info


def _describe_kpu_conv(node):
    a, n = node.arg, node.body.batches
    c_in, h, w = a.in_shape
    macs = n * a.out_shape[0] * h * w * a.kernel ** 2 * (1 if a.depthwise else c_in)
    kind = ("dw" if a.depthwise else "conv") + f"{a.kernel}x{a.kernel}"
    main = node.range("main_mem_output")
    memory = f"kpu[{a.image_src_addr * 64}] -> kpu[{a.image_dst_addr * 64}]" + ("" if main.absent else f" {main}")
    detail = f"{kind} pool={a.pool_type} pad={a.pad_value} skips={node.skips}"
    if n != 1:
        detail += f" batches={n}"
    return {"input": (n, c_in, h, w), "output": (n,) + a.out_shape, "memory": memory, "macs": macs,
            "weights": node.weights.nbytes + 8 * a.out_shape[0] + ACT_TABLE_BYTES, "detail": detail}


def _describe_shape(field, detail=None):
    def describe(node):
        shape = node.shape(field)
        info = describe_io(node, shape, None)
        if detail:
            info["detail"] = detail(node)
        return info
    return describe


def _describe_transpose(node):
    shape, perm = node.shape("in_shape"), node.shape("perm")
    out = tuple(shape[p] if 0 <= p < 4 else 0 for p in perm)
    info = describe_io(node, shape, out)
    info["detail"] = f"perm={perm}"
    return info


def _describe_pad(node):
    shape = node.shape("in_shape")
    pads = [(p.before, p.after) for p in node.body.paddings]
    info = describe_io(node, shape, tuple(s + a + b for s, (a, b) in zip(shape, pads)))
    info["detail"] = f"paddings={pads}"
    return info


def _describe_reduce(node):
    info = describe_io(node, node.shape("in_shape"), node.shape("out_shape"))
    info["detail"] = REDUCE_OPS.get(node.body.reduce_op)
    return info


def _describe_quant(node):
    info = describe_io(node)
    q = node.body.quant_param
    info["detail"] = f"zp={q.zero_point} scale={q.scale:.6g}"
    return info


DESCRIBERS = {
    "conv2d": _describe_conv, "quantized_conv2d": _describe_conv,
    "cpu_conv2d": _describe_cpu_conv, "cpu_depthwise_conv2d": _describe_cpu_conv,
    "cpu_quantized_conv2d": _describe_cpu_conv, "cpu_quantized_depthwise_conv2d": _describe_cpu_conv,
    "reduce_window2d": _describe_window, "cpu_reduce_window2d": _describe_window,
    "binary": _describe_binary, "quantized_binary": _describe_binary,
    "matmul": _describe_matmul, "quantized_matmul": _describe_matmul,
    "kpu_conv2d": _describe_kpu_conv, "kpu_upload": _describe_shape("in_shape"),
    "transpose": _describe_transpose, "pad": _describe_pad, "reduce": _describe_reduce,
    "quantize": _describe_quant, "dequantize": _describe_quant,
    "resize_image": _describe_shape("in_shape", lambda n: f"{RESIZE_MODES.get(n.body.mode)} -> "
                                                         f"{n.body.out_h}x{n.body.out_w}"),
    "strided_slice": _describe_shape("in_shape"),
    "unary": lambda n: {**describe_io(n), "detail": UNARY_OPS.get(n.body.unary_op)},
    "conv2d_transpose": lambda n: {**describe_io(n, n.shape("in_shape"), n.shape("out_shape")),
                                   "weights": n.extra["weights"].nbytes + n.extra["bias"].nbytes},
    "softmax": lambda n: {**describe_io(n, (n.body.outer_size, n.body.inner_size),
                                         (n.body.outer_size, n.body.inner_size)), "detail": f"beta={n.body.beta:g}"},
}
