"""How each graph convolution maps onto the KPU: kernel, fused pooling, stride via pool 5, CPU row/column
selection, the 1x1-map padding path, maps under 4x4 grown to 4x4 on the CPU (the extra outputs cropped) -- and
every limit it breaks, as messages naming the way out.
"""
import numpy as np

from ....layers import LINEAR
from ..chip.kpu import LayerArgument, kpu_layout

KPU_MIN_SIZE = 4
KPU_MAX_H, KPU_MAX_W = 256, 512
KPU_MAX_CHANNELS = 1024
WEIGHT_BUFFER = 30 * 1024        # nncase's bytes of weights per load (8-bit)
MAX_LOADS = 64

# graph pool (mode, size, strides, pads) -> KPU pool_type (spec 1.5.5), and its down-scaling factor
FUSED_POOLS = {
    ("max", (2, 2), (2, 2), (0, 0, 0, 0)): (1, 2),
    ("avg", (2, 2), (2, 2), (0, 0, 0, 0)): (2, 2),
    ("max", (4, 4), (4, 4), (0, 0, 0, 0)): (3, 4),
    ("avg", (4, 4), (4, 4), (0, 0, 0, 0)): (4, 4),
    ("avg", (2, 2), (1, 1), (0, 1, 0, 1)): (8, 1),
    ("max", (2, 2), (1, 1), (0, 1, 0, 1)): (9, 1),
}
KPU_CONV_KINDS = ("conv2d", "depthwise_conv2d", "dense", "batch_norm", "rescale")


class ConvPlan:
    """Decisions for one KPU convolution (see module doc)."""

    def __init__(self, node, kernel, bias, depthwise, strides, pads, activation):
        self.node = node
        self.kernel, self.bias, self.depthwise = kernel, bias, depthwise
        self.strides, self.pads, self.activation = strides, pads, activation
        self.k = kernel.shape[0]
        self.pool = 0                 # KPU pool_type
        self.fused = None             # name of a graph pool node computed by this layer
        self.select = None            # (r0, c0, sy, sx, out_h, out_w): CPU picks rows/cols of the output
        self.defer = False            # depthwise stride 2: the consumer 1x1 conv applies pool 5
        self.defer_to = None          # ... that consumer
        self.inherit = False          # 1x1 conv that applies its depthwise producer's pool 5
        self.padded = False           # 1x1 map: K210_ADD_PADDING, conv on 4x4, K210_REMOVE_PADDING
        self.prepad = (0, 0, 0, 0)    # zero padding done on the CPU before the KPU conv
        self.blind_pad = False        # the prepad only grows a small map and no kept output reads it
        self.problems = []
        self.unshifted = None         # the plan's select before shift_by_pool6 (kept for a v3 fallback)
        self.window = False           # dense over > 1024 inputs: one 3x3 conv on a gathered 4x4 map (window_kernel)


def conv_view(graph, node, dense_on_kpu=None):
    """(kernel, bias, depthwise, strides, pads, activation) if the node is a convolution the KPU could run.

    dense_on_kpu(node) decides for a dense layer on a vector (a 1x1 conv on a padded 1x1 map).
    """
    op, kind = node.op, node.op.kind
    if kind == "conv2d":
        return op.kernel, op.bias, False, op.strides, op.pads, op.activation
    if kind == "depthwise_conv2d":
        return op.kernel, op.bias, True, op.strides, op.pads, op.activation
    in_shape = graph[node.inputs[0]].shape
    if kind == "dense" and (len(in_shape) == 3 or (len(in_shape) == 1 and dense_on_kpu and dense_on_kpu(node))):
        return op.kernel[None, None], op.bias, False, (1, 1), (0, 0, 0, 0), op.activation
    if kind in ("batch_norm", "rescale") and len(in_shape) == 3:    # per-channel affine = depthwise 1x1
        c = in_shape[2]
        scale = np.broadcast_to(op.scale, (c,)).astype(np.float32)
        offset = np.broadcast_to(op.offset, (c,)).astype(np.float32)
        return scale.reshape(1, 1, c, 1), offset, True, (1, 1), (0, 0, 0, 0), LINEAR
    return None


def sole_consumer(graph, name):
    readers = graph.consumers(name)
    if len(readers) != 1 or name in graph.outputs:
        return None
    return graph[readers[0]]


def plan_conv(graph, node, view, inherited=False):
    """The ConvPlan of one conv node; `inherited`: its depthwise producer left it a pool 5."""
    kernel, bias, depthwise, strides, pads, act = view
    plan = ConvPlan(node.name, kernel, bias, depthwise, strides, pads, act)
    plan.inherit = inherited
    where = f"layer '{node.name}' ({node.op.kind}"
    kh, kw = kernel.shape[:2]
    in_shape = graph[node.inputs[0]].shape
    h, w, c_in = in_shape if len(in_shape) == 3 else (1, 1, in_shape[0])
    if inherited:
        h, w = 2 * h, 2 * w
    c_out = node.shape[-1]
    if node.op.kind == "dense" and (h, w) == (1, 1) and KPU_MAX_CHANNELS < c_in <= WINDOW_TAPS * KPU_MAX_CHANNELS:
        plan.window, plan.k = True, 3
        c_in = -(-c_in // WINDOW_TAPS)
    dilation = node.op.attrs.get("dilation", (1, 1))
    if dilation != (1, 1):
        plan.problems.append(f"{where} {kh}x{kw} dilation {dilation[0]}x{dilation[1]}): the KPU has no dilated "
                             f"convolution; use dilation 1 (or a larger map) instead")
    if depthwise and kernel.shape[3] != 1:
        plan.problems.append(f"{where}): depth multiplier {kernel.shape[3]}; the KPU runs depthwise convolutions "
                             f"with multiplier 1 only; use a depthwise conv followed by a 1x1 conv")
    if kh != kw or kh not in (1, 3):
        plan.problems.append(f"{where}): kernel {kh}x{kw}; the KPU runs 1x1 and 3x3 kernels only; use 3x3 "
                             f"convolutions (two 3x3 instead of a 5x5) or 1x1")
    for label, count in (("input", c_in), ("output", c_out)):
        if count > KPU_MAX_CHANNELS:
            plan.problems.append(f"{where}): {count} {label} channels; the KPU takes at most {KPU_MAX_CHANNELS} "
                                 f"(beyond that boards give constant outputs, nncase issue 206); split the layer")
    if plan.problems:
        return plan
    if plan.window:
        _check_loads(plan, where, 3, c_in, c_out, False)
        return plan
    if h == 1 and w == 1:
        return _plan_padded(plan, where, kh, pads)
    out_h, out_w = node.shape[0], node.shape[1]
    sy, sx = strides
    top, bottom, left, right = pads
    native = 0 if kh == 1 else 1                  # the KPU pads a 3x3 conv by one pixel on every side
    plan.prepad = tuple(max(p - native, 0) for p in pads)
    if any(plan.prepad):                           # the rest is padded on the CPU before the upload
        top, bottom, left, right = (p - e for p, e in zip(pads, plan.prepad))
        h += plan.prepad[0] + plan.prepad[1]
        w += plan.prepad[2] + plan.prepad[3]
    r0, c0 = native - top, native - left
    grow_h, grow_w = max(KPU_MIN_SIZE - h, 0), max(KPU_MIN_SIZE - w, 0)
    if grow_h or grow_w:        # a map under 4x4: grown below / right to the KPU's 4x4, the extra outputs cropped
        plan.blind_pad = not any(plan.prepad) and (kh == 1 or (bottom, right) == (0, 0))
        plan.prepad = (plan.prepad[0], plan.prepad[1] + grow_h, plan.prepad[2], plan.prepad[3] + grow_w)
        h, w = h + grow_h, w + grow_w
    _check_map(plan, where, h, w)
    _check_loads(plan, where, kh, c_in, c_out, depthwise)
    if inherited:                        # a stride-1 1x1 conv on the full-size map of a stride-2 depthwise
        plan.pool = 5
        return plan
    if (r0, c0, sy, sx, out_h, out_w) == (0, 0, 1, 1, h, w):
        return plan
    if (r0, c0, sy, sx) == (0, 0, 2, 2) and (out_h, out_w) == (h // 2, w // 2):
        if depthwise:
            plan.defer = True            # resolved by the lowering: consumer pool 5 or CPU selection
        else:
            plan.pool = 5
        return plan
    plan.select = (r0, c0, sy, sx, out_h, out_w)      # TF 'same' stride 2 on an even size: (1, 1, 2, 2)
    return plan


def shift_by_pool6(plan, in_hw):
    """A TF-'same' stride-2 3x3 conv on an even map on the KPU as nncase v0.2 runs it (spec 1.5.6).

    One zero row above and below on the CPU, the stride-1 KPU conv with pool 6 (rows 0, 2, 4 ..., columns
    1, 3, 5 ... of its output), and the first row dropped: row 2y of the padded map is input row 2y - 1, so
    output row y - 1 is centred on input row 2y - 1 as TF's (0, 1) padding wants. Returns False (plan kept)
    when the conditions do not hold: a depthwise conv (the KPU does not pool after one), other kernels, odd
    sizes, or a padded map over the KPU's rows; the plan then keeps its CPU selection of the full-size map
    (also what kmodel v3 falls back to when the input's zero point is not 0, see unshift).
    """
    if plan.select is None or plan.problems:
        return False
    h, w = in_hw
    r0, c0, sy, sx, out_h, out_w = plan.select
    if (plan.depthwise or plan.k != 3 or (r0, c0, sy, sx) != (1, 1, 2, 2) or (h, w) != (2 * out_h, 2 * out_w)
            or any(plan.prepad) or h + 2 > KPU_MAX_H):
        return False
    plan.unshifted = plan.select
    plan.prepad = (1, 1, 0, 0)
    plan.pool = 6
    plan.select = (1, 0, 1, 1, out_h, out_w)
    return True


def unshift(plan):
    """Undo shift_by_pool6: the stride-1 conv on the unpadded map, rows and columns picked on the CPU."""
    plan.prepad, plan.pool, plan.select, plan.unshifted = (0, 0, 0, 0), 0, plan.unshifted, None


WINDOW_TAPS = 9                  # a dense layer's inputs per channel in its 3x3 window form


def window_kernel(kernel):
    """A dense kernel (1, 1, n_in, n_out) as a 3x3 conv kernel (3, 3, C, n_out), C = ceil(n_in / 9): input
    9c + 3ky + kx is tap (ky, kx) of channel c, so output pixel (1, 1) of the 'same' conv on a 4x4 map whose
    rows 0-2, columns 0-2 hold the inputs (window_ranges) is the dense layer; taps past n_in weigh 0."""
    n_in, n_out = kernel.shape[2:]
    c = -(-n_in // WINDOW_TAPS)
    flat = np.zeros((c * WINDOW_TAPS, n_out), np.float64)
    flat[:n_in] = np.asarray(kernel, np.float64).reshape(n_in, n_out)
    return flat.reshape(c, 3, 3, n_out).transpose(1, 2, 0, 3)


def window_fits(n_in, n_out):
    """Whether a dense layer of n_in > 1024 inputs fits the KPU in its window form (channels, weight loads)."""
    c = -(-n_in // WINDOW_TAPS)
    per_load = min(n_out, WEIGHT_BUFFER // (9 * c))
    return c <= KPU_MAX_CHANNELS and n_out <= KPU_MAX_CHANNELS and per_load >= 1 and -(-n_out // per_load) <= MAX_LOADS


def window_ranges(n_in, channels):
    """(start, size) byte ranges of an n_in-byte vector that build the CHW 4x4 map window_kernel reads: per channel
    rows 0-2 take 3 inputs each; the bytes no kept tap reads (column 3, row 3, past n_in) repeat the vector's start."""
    ranges = []
    for c in range(channels):
        for row in range(4):
            start = WINDOW_TAPS * c + 3 * row
            real = max(min(n_in - start, 3), 0) if row < 3 else 0
            if real:
                ranges.append((start, real))
            ranges.append((0, 4 - real))
    return ranges


def as_fully_connected(kernel, bias, depthwise, strides, pads, in_hw, out_hw):
    """A convolution on a small map as the dense layer it is, on the map's CHW bytes: kernel (1, 1, C_in*H*W,
    C_out*OH*OW) and bias, both in CHW order. Padded taps are simply absent, so no pad value is needed (v3 can only
    pad with code 0, which is real 0 only for a zero point of 0)."""
    kernel = np.asarray(kernel, np.float64)
    kh, kw, c_in = kernel.shape[:3]
    c_out = c_in * kernel.shape[3] if depthwise else kernel.shape[3]
    (h, w), (oh, ow) = in_hw, out_hw
    full = np.zeros((c_in, h, w, c_out, oh, ow))
    for oy in range(oh):
        for ox in range(ow):
            for ky in range(kh):
                for kx in range(kw):
                    y, x = oy * strides[0] + ky - pads[0], ox * strides[1] + kx - pads[2]
                    if not (0 <= y < h and 0 <= x < w):
                        continue
                    if depthwise:
                        taps = kernel[ky, kx].reshape(-1)                     # channel c -> output c (multiplier 1)
                        full[np.arange(c_in), y, x, np.arange(c_out), oy, ox] += taps
                    else:
                        full[:, y, x, :, oy, ox] += kernel[ky, kx]
    b = np.zeros(c_out) if bias is None else np.asarray(bias, np.float64)
    return full.reshape(1, 1, c_in * h * w, c_out * oh * ow), np.repeat(b, oh * ow)


def _plan_padded(plan, where, k, pads):
    """A 1x1 map: 1x1 conv (or a 3x3 'same' conv, whose centre tap is all that sees data) on a padded 4x4 map."""
    if k == 3:
        if tuple(pads) != (1, 1, 1, 1):
            plan.problems.append(f"{where}): 3x3 conv on a 1x1 map without 'same' padding")
            return plan
        plan.kernel = plan.kernel[1:2, 1:2]
        plan.k = 1
    plan.padded = True
    return plan


def _check_map(plan, where, h, w):
    if h < KPU_MIN_SIZE or w < KPU_MIN_SIZE:
        plan.problems.append(f"{where}): input map {h}x{w} is smaller than the KPU's {KPU_MIN_SIZE}x{KPU_MIN_SIZE}; "
                             f"use a larger input or fewer downsamplings")
    if h > KPU_MAX_H or w > KPU_MAX_W:
        plan.problems.append(f"{where}): input map {h}x{w} exceeds the KPU's {KPU_MAX_H} rows x {KPU_MAX_W} "
                             f"columns; resize the input (e.g. 320x240)")


def _check_loads(plan, where, k, c_in, c_out, depthwise):
    if depthwise:
        return
    per_channel = k * k * c_in
    per_load = min(c_out, WEIGHT_BUFFER // per_channel)
    loads = -(-c_out // max(per_load, 1))
    if per_load < 1 or loads > MAX_LOADS:
        plan.problems.append(f"{where}): {c_out} output channels of {per_channel} weight bytes need {loads} "
                             f"weight loads; the KPU allows {MAX_LOADS}; use fewer channels or split the layer")


def weight_loads(k, c_in, c_out, depthwise):
    """(o_ch_num_coef + 1, load_time + 1, para_size) by nncase's rule (spec 1.3)."""
    if depthwise:
        return c_out, 1, c_out * k * k
    per_channel = k * k * c_in
    n = min(c_out, WEIGHT_BUFFER // per_channel)
    return n, -(-c_out // n), n * per_channel


def fused_pool(graph, node, plan):
    """(pool node, KPU pool code) when the conv's only reader is a pool the KPU does the same way."""
    if (plan.depthwise or plan.select or plan.pool or plan.defer or plan.inherit or plan.padded or plan.problems
            or any(plan.prepad)):
        return None
    pool = sole_consumer(graph, node.name)
    if pool is None or pool.op.kind != "pool2d":
        return None
    key = (pool.op.mode, pool.op.pool_size, pool.op.strides, pool.op.pads)
    if key not in FUSED_POOLS:
        return None
    code, factor = FUSED_POOLS[key]
    h, w = node.shape[:2]
    if pool.shape[:2] != (h // factor, w // factor):
        return None
    return pool.name, code


def kpu_layer_argument(layer):
    """The 12-word KPU layer argument (spec 1.2/1.3) of a K210_CONV (v3) or kpu_conv2d (v4), planned addresses."""
    p = layer.params["conv"]
    c_in, h, w = layer.params["in_chw"]
    c_out, oh, ow = layer.params["out_chw"]
    k = p.kernel_size
    per_load, loads, para_size = weight_loads(k, c_in, c_out, p.depthwise)
    g_in, _, row_in = kpu_layout(w)
    g_out, _, row_out = kpu_layout(ow)
    arg = LayerArgument(
        depth_wise_layer=int(p.depthwise),
        image_src_addr=layer.inputs[0].address, image_dst_addr=layer.outputs[0].address,
        i_ch_num=c_in - 1, o_ch_num=c_out - 1, o_ch_num_coef=per_load - 1,
        i_row_wid=w - 1, i_col_high=h - 1, o_row_wid=ow - 1, o_col_high=oh - 1,
        kernel_type=1 if k == 3 else 0, pad_type=0, pool_type=layer.params["pool"], load_para=1,
        dma_burst_size=15, pad_value=p.pad_value,
        load_coor=1, load_time=loads - 1, para_size=para_size,
        channel_switch_addr=row_in * h, row_switch_addr=row_in, coef_group=g_in, load_act=1,
        wb_channel_switch_addr=row_out * oh, wb_row_switch_addr=row_out, wb_group=g_out,
        shr_w=p.shr_w, shr_x=p.shr_x, arg_w=p.arg_w, arg_x=p.arg_x, arg_add=p.arg_add,
        send_data_out=0, channel_byte_num=ow * oh - 1, dma_total_byte=ow * oh * c_out - 1)
    return arg
