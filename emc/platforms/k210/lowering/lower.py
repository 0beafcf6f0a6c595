"""Lowering: walk the optimized graph in order and emit kmodel v3 layers through the op table (table.py and
its handlers_* rows).

Every graph tensor becomes a Value whose buffers (a map in KPU RAM, uint8 or float32 in main memory) are made
on demand: asking for a form a value lacks inserts the upload / quantize / dequantize / DMA stream-out that
makes it. Problems (limits the K210 cannot take) are collected, never raised one by one.
"""
import logging

import numpy as np

from ....errors import EmcError, QuantizationError
from ....graph import preact_name
from ..chip.cpu_math import pool_wraps
from .actfit import SEG0_X, SEGMENTS, UNUSED_X, ActTable
from .convplan import (KPU_CONV_KINDS, KPU_MAX_CHANNELS, conv_view, fused_pool, plan_conv, shift_by_pool6,
                       sole_consumer, window_fits)
from .ir import CODE, F32, KPU, MAIN, U8, Buffer, BufferView, Layer, V4Layer, Value
from .quantize import KpuConvParams, Quant
from .table import TABLE

log = logging.getLogger(__name__)
DMA_MAX_PIXELS = 1 << 16          # 16-bit channel_byte_num of the KPU's DMA stream-out


class Lowering:
    """State of one conversion: values, emitted layers, buffers, collected problems and notes."""

    def __init__(self, graph, calibration, input_transform=None, softmax=False, dequantize=True, dense="auto",
                 version=3):
        self.graph = graph
        self.version = version      # 3: the stock SDK's layers; 4: also nncase v0.2's CPU ops (V4Layer)
        self.cal = calibration
        self.input_transform = input_transform
        self.softmax_outputs = softmax
        self.dequantize_outputs = dequantize
        self.dense_mode = dense
        self.values = {}
        self.layers = []
        self.buffers = []
        self.problems = []
        self.notes = []
        self.overrides = {}         # tensor -> (lo, hi) used instead of its calibrated range
        self.plans = {}             # conv node -> ConvPlan
        self.folded = set()         # nodes computed inside another layer (fused pools, folded Rescale)
        self.outputs = []           # (graph name, Buffer, info dict)
        self.input_kind = None      # 'kpu' or 'float'
        self.input_quant = None     # pixel -> float transform actually used (scale, offset)
        self.input_buffer = None    # where the loader puts the model input (KPU map or float vector)
        self.act_errors = []        # (node, activation, method, max error LSB)

    # ---- driver -------------------------------------------------------------------------------------------
    def run(self):
        graph = self.graph
        if len(graph.inputs) != 1:
            self.problems.append(f"the model has {len(graph.inputs)} inputs; a K210 kmodel takes one input "
                                 f"(the camera image or one float vector)")
            return self
        self._plan_quant()
        self._setup_input()
        self._plan_convs()
        for node in graph:
            if node.name in self.values or node.name in self.folded:
                continue
            handler = TABLE.get(node.op.kind)
            if handler is None:
                self.problem(node, f"op '{node.op.kind}' has no K210 lowering; the K210 converter takes "
                                   f"{', '.join(sorted(TABLE))}")
            else:
                try:
                    handler(self, node)
                except QuantizationError as err:
                    self.problem(node, f"{err}")
                except (ValueError, KeyError, IndexError):
                    if not self.problems:            # a bug, not the echo of a problem already listed
                        raise
                    log.debug("skipped %s after earlier problems", node.name)
            if node.name not in self.values:
                self.placeholder(node)
        had_problems = bool(self.problems)
        try:
            self._outputs()
        except (ValueError, KeyError, IndexError):
            if not had_problems:
                raise
        if not self.problems and self.version == 3:
            self._check_first_layer()
        return self

    def problem(self, node, message):
        name = node if isinstance(node, str) else node.name
        kind = "" if isinstance(node, str) else f" ({node.op.kind})"
        text = message if message.startswith("layer '") else f"layer '{name}'{kind}: {message}"
        if text not in self.problems:
            self.problems.append(text)

    def placeholder(self, node):
        """A stand-in value for a layer that could not be lowered, so the walk goes on and finds every problem."""
        lo, hi = self.cal.ranges.get(node.name, (0.0, 1.0))
        v = Value(node.name, node.shape, Quant.from_range(lo, hi))
        v.forms[U8] = self.buffer(node.name, MAIN, U8, v.chw if len(node.shape) == 3 else (v.count,), v.quant)
        v.forms[F32] = self.buffer(node.name, MAIN, F32, (v.count,))
        self.values[node.name] = v
        return v

    # ---- quantisation ranges ---------------------------------------------------------------------------------
    def range_of(self, name):
        if name in self.overrides:
            return self.overrides[name]
        try:
            return self.cal.ranges[name]
        except KeyError:
            raise QuantizationError(f"the calibration has no range for tensor '{name}'") from None

    def quant_of(self, name):
        return Quant.from_range(*self.range_of(name))

    def pre_range(self, name, act):
        """Range of the pre-activation output (calibrated under graph.preact_name) or the output's own."""
        key = preact_name(name)
        if not act.is_linear and key in self.cal.ranges:
            return self.cal.ranges[key]
        return self.range_of(name)

    def _plan_quant(self):
        """Give producers the quantisation their reader needs, so no requantize is needed in between:
        an add followed by relu/relu6 clamps for free with the activation's range; concat inputs share one."""
        graph = self.graph
        for node in graph:
            kind = node.op.kind
            if kind == "activation" and node.op.activation.name in ("relu", "relu6"):
                src = graph[node.inputs[0]]
                if src.op.kind == "elementwise" and sole_consumer(graph, src.name) is node:
                    self.overrides[src.name] = self.cal.ranges[node.name]
            elif kind == "concat":
                for name in node.inputs:
                    producer = self._quant_source(name, node)
                    if producer is not None:
                        self.overrides[producer] = self.cal.ranges[node.name]

    def _quant_source(self, name, reader):
        """The layer whose output quantisation reaches `reader` unchanged through copies (upsample, max pool)."""
        graph = self.graph
        while True:
            node = graph[name]
            if sole_consumer(graph, name) is not reader:
                return None
            kind = node.op.kind
            if kind in ("upsample2d", "crop2d") or (kind == "pool2d" and node.op.mode == "max"):
                reader, name = node, node.inputs[0]
                continue
            if kind in ("conv2d", "depthwise_conv2d", "elementwise"):
                return name
            return None

    # ---- input ---------------------------------------------------------------------------------------------------
    def _setup_input(self):
        graph = self.graph
        name = graph.inputs[0]
        node = graph[name]
        readers = [graph[n] for n in graph.consumers(name)]
        rescale = readers[0] if len(readers) == 1 and readers[0].op.kind == "rescale" \
            and name not in graph.outputs else None
        if len(node.shape) == 3 and self._wants_kpu_input(rescale.name if rescale else name):
            self._kpu_input(node, rescale)
        elif len(node.shape) in (1, 3):
            self.input_kind = "float"
            v = Value(name, node.shape, order=None)
            if len(node.shape) == 3:
                v.order = "hwc"            # the float input vector is the HWC flattening of the map
            v.forms[F32] = self.buffer(name, MAIN, F32, (v.count,))
            self.input_buffer = v.forms[F32]
            self.values[name] = v
        else:
            self.problem(node, f"input shape {node.shape}: a K210 kmodel takes an (H, W, C) image or a vector")

    def _wants_kpu_input(self, name):
        readers = [self.graph[n] for n in self.graph.consumers(name)]
        if any(conv_view(self.graph, r) is not None for r in readers):
            return True
        return not (readers and all(r.op.kind in ("flatten", "reshape") for r in readers))

    def _kpu_input(self, node, rescale):
        h, w, c = node.shape
        if self.input_transform is None:
            q = Quant.from_range(*self.cal.ranges[node.name])
            scale, offset = q.scale, -q.zero_point * q.scale
        else:
            scale, offset = (float(t) for t in self.input_transform)
        self.input_kind = "kpu"
        self.input_quant = (scale, offset)
        s = np.full(c, scale)
        o = np.full(c, offset)
        v = Value(node.name, node.shape)
        v.forms[KPU] = self.buffer(node.name, KPU, U8, (c, h, w))
        self.input_buffer = v.forms[KPU]
        v.affine = (s, o)
        v.quant = _uniform_quant(s, o)
        self.values[node.name] = v
        if rescale is not None:
            rs = np.broadcast_to(rescale.op.scale, (c,)).astype(np.float64)
            ro = np.broadcast_to(rescale.op.offset, (c,)).astype(np.float64)
            r = Value(rescale.name, rescale.shape, forms=v.forms)
            r.affine = (s * rs, o * rs + ro)
            r.quant = _uniform_quant(*r.affine)
            self.values[rescale.name] = r
            self.folded.add(rescale.name)

    # ---- convolution plans ---------------------------------------------------------------------------------------
    def _plan_convs(self):
        graph = self.graph
        inherited = set()
        for node in graph:
            if node.op.kind not in KPU_CONV_KINDS or node.name in self.folded:
                continue
            view = conv_view(graph, node, self._dense_on_kpu)
            if view is None:
                continue
            plan = plan_conv(graph, node, view, inherited=node.name in inherited)
            shift_by_pool6(plan, graph[node.inputs[0]].shape[:2])
            if plan.defer:
                reader = sole_consumer(graph, node.name)
                rview = conv_view(graph, reader) if reader is not None else None
                if (rview is not None and not rview[2] and rview[0].shape[:2] == (1, 1) and rview[3] == (1, 1)
                        and not any(rview[4])):
                    inherited.add(reader.name)
                    plan.defer_to = reader.name
                else:
                    plan.defer = False
                    plan.select = (0, 0, 2, 2) + tuple(node.shape[:2])
            pool = fused_pool(graph, node, plan)
            if pool is not None:
                plan.fused, plan.pool = pool
                self.folded.add(plan.fused)
            self.plans[node.name] = plan

    def _dense_on_kpu(self, node):
        """Dense on a vector: a quantised 1x1 KPU conv ('kpu'; over 1024 inputs one 3x3 conv, convplan.window_kernel),
        float FULLY_CONNECTED ('cpu'), or by size ('auto': the KPU for layers of 64K weights or more, which would
        take 256 KiB as float32, and for those over 1024 inputs, whose uint8 form runs in one KPU layer)."""
        n_in, n_out = node.op.kernel.shape
        src = self.graph[node.inputs[0]]
        if ((n_in > KPU_MAX_CHANNELS and not window_fits(n_in, n_out)) or n_out > KPU_MAX_CHANNELS
                or src.name in self.graph.inputs or (src.op.kind in ("flatten", "reshape")
                                                     and src.inputs[0] in self.graph.inputs)):
            return False
        if self.dense_mode == "kpu":
            return True
        return self.dense_mode == "auto" and self.big_dense(node)

    @staticmethod
    def big_dense(node):
        """A dense layer whose float32 weights would cost: 64K weights or more (256 KiB), or over 1024 inputs."""
        n_in, n_out = node.op.kernel.shape
        return n_in * n_out >= 65536 or n_in > KPU_MAX_CHANNELS

    # ---- building blocks ---------------------------------------------------------------------------------------------
    def buffer(self, name, where, dtype, shape, quant=None):
        buf = Buffer(name, where, dtype, shape, quant)
        self.buffers.append(buf)
        return buf

    def emit(self, code, node, inputs, outputs, **kwargs):
        """A kmodel v3 layer (type name or code)."""
        return self._append(Layer(CODE[code] if isinstance(code, str) else code, node, inputs, outputs, **kwargs))

    def emit_v4(self, op, node, inputs, outputs, **kwargs):
        """A kmodel v4 node (version 4 only): what no v3 layer can do."""
        if self.version != 4:
            raise ValueError(f"{op} is a kmodel v4 op")
        return self._append(V4Layer(op, node, inputs, outputs, **kwargs))

    def _append(self, layer):
        layer.index = len(self.layers)
        self.layers.append(layer)
        return layer

    def set_value(self, name, shape, form, buf, quant=None, order=None, conv=None):
        v = Value(name, shape, quant, order)
        v.forms[form] = buf
        v.conv = conv
        self.values[name] = v
        return v

    def alias(self, name, src, shape, order=None):
        """A value that shares the bytes (and every form made later) of another one."""
        if src.raw is not None:
            self.need(src, U8)
        v = Value(name, shape, src.quant, order, forms=src.forms)
        v.conv = src.conv
        self.values[name] = v
        return v

    def need(self, value, form):
        """The buffer holding `value` in `form`, converting from a form it has when needed."""
        v = self.values[value] if isinstance(value, str) else value
        if form in v.forms:
            return v.forms[form]
        if form == U8:
            if v.raw is not None:
                full = self.stream_out(v.conv)          # stride 2 of a depthwise conv, done on the CPU
                buf = self.select(v.name, full, v.raw.chw, (0, 0, 2, 2) + tuple(v.shape[:2]), v.quant)
            elif KPU in v.forms and v.conv is not None:
                buf = self.stream_out(v.conv)
            elif KPU in v.forms:
                buf = self.download_input(v)
            elif F32 in v.forms:
                buf = self.quantize(v.name, v.forms[F32], v.quant or self.quant_of(v.name))
            else:
                raise QuantizationError(f"tensor '{v.name}' has no form to convert from")
            if v.quant is None:
                v.quant = self.quant_of(v.name)
        elif form == KPU:
            buf = self.upload(v.name, self.need(v, U8), v.chw, v.quant)
        elif form == F32:
            buf = self.dequantize(v.name, self.need(v, U8), v.quant)
        else:
            raise ValueError(form)
        v.forms[form] = buf
        return buf

    def natural(self, value):
        """The value in graph (row-major) order: a flattened map stored CHW goes through TENSORFLOW_FLATTEN."""
        v = self.values[value] if isinstance(value, str) else value
        if v.order is None or v.order == "hwc":
            return v
        f32 = self.need(v, F32)
        h, w, c = v.order
        out = self.buffer(v.name + ":hwc", MAIN, F32, (v.count,))
        self.emit("TENSORFLOW_FLATTEN", v.name, [f32], [out], chw=(c, h, w))
        nv = Value(v.name, v.shape, v.quant)
        nv.forms[F32] = out
        return nv

    # ---- layers -------------------------------------------------------------------------------------------------------
    def stream_out(self, conv_layer):
        """The main-memory (dense CHW) copy of a K210_CONV output: sets the layer's DMA flag once."""
        main = conv_layer.params.get("main_out")
        if main is None:
            c, h, w = conv_layer.params["out_chw"]
            if h * w > DMA_MAX_PIXELS:
                self.problem(conv_layer.node, f"its output map {h}x{w} is read by a CPU layer, but the KPU's DMA "
                                              f"streams out at most {DMA_MAX_PIXELS} pixels per channel; use a "
                                              f"smaller map")
            main = self.buffer(conv_layer.node + ":main", MAIN, U8, (c, h, w), conv_layer.outputs[0].quant)
            conv_layer.params["main_out"] = main
            conv_layer.outputs.append(main)
        return main

    def download_input(self, v, quant=None, extra_codes=()):
        """A 1x1 identity KPU conv that copies the model input to main memory (v3 has no KPU->CPU copy); each of
        extra_codes adds one output channel holding that code everywhere (zero weights, the code as bias)."""
        quant = quant or v.quant or self._pixel_quant(v)
        if quant is None:
            self.problem(v.name, "the input feeds a CPU layer, which needs one (scale, zero point) for all "
                                 "channels and an integer zero point; put a conv first or use img_0_1/img_0_255")
            return self.buffer(v.name, MAIN, U8, v.chw)
        c, h, w = v.chw
        zp = quant.zero_point
        extra = len(extra_codes)
        weights = np.eye(c + extra, c, dtype=np.uint8).reshape(c + extra, c, 1, 1)
        bn_add = np.zeros(c + extra, np.int64)
        bn_add[c:] = np.asarray(extra_codes, np.int64) - zp    # v = code - zp, which the table maps back to the code
        x_start = [SEG0_X, -zp] + [UNUSED_X + i for i in range(2, SEGMENTS)]
        table = ActTable(x_start, [0, 1] + [0] * 14, [0] * 16, [0, 0] + [255] * 14, 0, "exact", "identity")
        params = KpuConvParams(weights=weights, zp_w=0, s_w=1.0, s_o=np.ones(c + extra), in_quant=quant,
                               out_quant=quant, v_scale=1.0, arg_x=0, shr_x=0, arg_w=-zp, shr_w=0, arg_add=0,
                               pad_value=zp, bn_mul=np.ones(c + extra, np.int64),
                               bn_shift=np.zeros(c + extra, np.int64), bn_add=bn_add, act=table, kernel_size=1,
                               depthwise=False, c_in=c, c_out=c + extra)
        out = self.buffer(v.name + ":copy", KPU, U8, (c + extra, h, w), quant)
        layer = self.emit("K210_CONV", v.name, [v.forms[KPU]], [out], macs=c * (c + extra) * h * w,
                          weight_bytes=c * (c + extra), conv=params, pool=0, in_chw=(c, h, w),
                          out_chw=(c + extra, h, w))
        return self.stream_out(layer)

    def padded_input(self, name, v, pads, quant, codes=None):
        """The model input padded (top, bottom, left, right) with a code, once per code of `codes` (default: its
        zero point's), the copies stacked along the channels. v3's CPU padding writes code 0 only, so there the
        identity copy carries one channel per code and a QUANTIZED_CONCAT lays the image rows and pad bytes out;
        kmodel v4 pads the copy with its pad op, then concatenates."""
        c, h, w = v.chw
        top, bottom, left, right = pads
        codes = (quant.zero_point,) if codes is None else tuple(codes)
        out_chw = (c * len(codes), h + top + bottom, w + left + right)
        out = self.buffer(name, MAIN, U8, out_chw, quant)
        if self.version == 4:
            main = self.download_input(v, quant)
            parts = [self.pad_map(f"{name}:{code}", main, (c, h, w), pads, code, quant) for code in codes]
            if len(parts) == 1:
                return parts[0]
            self.emit("QUANTIZED_CONCAT", name, parts, [out], ranges=[(p, 0, p.nbytes) for p in parts])
            return out
        main = self.download_input(v, quant, extra_codes=codes)
        ranges = []
        for j in range(len(codes)):
            fill = c * h * w + j * h * w                  # the channel holding codes[j]
            for ch in range(c):
                ranges += [(main, fill, out_chw[2])] * top
                if left == right == 0:
                    ranges.append((main, ch * h * w, h * w))
                else:
                    for y in range(h):
                        ranges += [(main, fill, left)] * bool(left) + [(main, ch * h * w + y * w, w)] + \
                            [(main, fill, right)] * bool(right)
                ranges += [(main, fill, out_chw[2])] * bottom
        self.emit("QUANTIZED_CONCAT", name, [main], [out], ranges=ranges)
        return out

    @staticmethod
    def _pixel_quant(v):
        """The camera pixels' own codes (scale 1, the rounded zero point) for an input whose pixel -> float mapping
        has a fractional zero point (img_neg1_1: 127.5): a conv that folds the mapping in (fold_input_transform)
        reads the copied pixels in these units; None for any other input."""
        if v.affine is None:
            return None
        scale, offset = (np.asarray(a, np.float64) for a in v.affine)
        return Quant(1.0, int(np.clip(round(float(np.mean(-offset / scale))), 0, 255)))

    def upload(self, name, u8, chw, quant):
        out = self.buffer(name + ":kpu", KPU, U8, chw, quant)
        self.emit("K210_UPLOAD", name, [u8], [out], chw=chw)
        return out

    def quantize(self, name, f32, quant):
        out = self.buffer(name + ":u8", MAIN, U8, f32.shape, quant)
        self.emit("QUANTIZE", name, [f32], [out], count=f32.count, scale=quant.scale,
                  bias=-quant.zero_point * quant.scale)
        return out

    def dequantize(self, name, u8, quant):
        out = self.buffer(name + ":f32", MAIN, F32, (u8.count,))
        self.emit("DEQUANTIZE", name, [u8], [out], count=u8.count, scale=quant.scale,
                  bias=-quant.zero_point * quant.scale)
        return out

    def max_pool(self, name, u8, in_chw, out_hw, kernel, strides, pads, quant):
        """QUANTIZED_MAX_POOL2D: window origin = out * stride - pad (top, left); out-of-map samples skipped.

        emc never emits a window that starts 2+ pixels past the map's edge: kpu.c's unsigned window end makes
        such a window read the next row / channel instead of nothing (chip/cpu_math.pool_window_axis)."""
        c = in_chw[0]
        if self.version == 3 and pool_wraps(in_chw[1:], out_hw, kernel, strides, pads):
            raise EmcError(f"internal: '{name}' would emit a QUANTIZED_MAX_POOL2D whose windows wrap in kpu.c")
        out = self.buffer(name, MAIN, U8, (c,) + tuple(out_hw), quant)
        self.emit("QUANTIZED_MAX_POOL2D", name, [u8], [out], in_chw=in_chw, out_chw=(c,) + tuple(out_hw),
                  kernel=kernel, strides=strides, pads=pads)
        return out

    def pad_map(self, name, u8, in_chw, pads, code, quant):
        """A uint8 CHW map padded (top, bottom, left, right) on the CPU with `code`: kmodel v4's pad; in v3 a 1x1
        QUANTIZED_MAX_POOL2D, whose out-of-map samples are code 0 (the caller checks that code 0 is wanted)."""
        c, h, w = in_chw
        top, bottom, left, right = pads
        out_hw = (h + top + bottom, w + left + right)
        if self.version == 3:             # one trailing row / column per pass: a 2nd would wrap in kpu.c
            passes = max(bottom, right, 1)
            for i in range(passes):
                step_hw = (h + (top if i == 0 else 0) + (bottom > i), w + (left if i == 0 else 0) + (right > i))
                u8 = self.max_pool(name if i == passes - 1 else f"{name}:pad{i}", u8, (c, h, w), step_hw, (1, 1),
                                   (1, 1), (top, left) if i == 0 else (0, 0), quant)
                h, w = step_hw
            return u8
        out = self.buffer(name, MAIN, U8, (c,) + out_hw, quant)
        self.emit_v4("pad", name, [u8], [out], in_shape=(1, c, h, w), pad_value=code,
                     paddings=((0, 0), (0, 0), (top, bottom), (left, right)))
        return out

    def select(self, name, u8, in_chw, selection, quant):
        """Rows r0, r0+sy, ... and columns c0, c0+sx, ... of a uint8 CHW map, on the CPU."""
        r0, c0, sy, sx, oh, ow = selection
        if self.version == 4:                  # nncase's strided_slice takes any offset and stride
            c, h, w = in_chw
            out = self.buffer(name + ":sel", MAIN, U8, (c, oh, ow), quant)
            self.emit_v4("strided_slice", name, [u8], [out], in_shape=(1, c, h, w), begin=(0, 0, r0, c0),
                         end=(1, c, r0 + (oh - 1) * sy + 1, c0 + (ow - 1) * sx + 1), strides=(1, 1, sy, sx))
            return out
        if (sy, sx) == (1, 1):
            return self.crop(name, u8, in_chw, (r0, c0, oh, ow), quant, U8)
        if (r0, c0) != (0, 0):             # read the map from (r0, c0) on in place: no shifted copy
            c, h, w = in_chw
            u8.min_bytes = max(u8.min_bytes, c * h * w + r0 * w + c0)   # the view reads r0 * w + c0 bytes on
            u8 = BufferView(u8, r0 * w + c0, in_chw)
        return self.max_pool(name + ":sel", u8, in_chw, (oh, ow), (1, 1), (sy, sx), (0, 0), quant)

    def crop(self, name, buf, in_chw, window, quant, dtype):
        """A crop as a CONCAT of byte ranges (one per channel, or per row when columns are cut)."""
        r0, c0, oh, ow = window
        c, h, w = in_chw
        item = 1 if dtype == U8 else 4
        ranges = []
        for ch in range(c):
            if c0 == 0 and ow == w:
                ranges.append((buf, item * (ch * h * w + r0 * w), item * oh * w))
            else:
                ranges.extend((buf, item * (ch * h * w + (r0 + y) * w + c0), item * ow) for y in range(oh))
        out = self.buffer(name + ":crop", MAIN, dtype, (c, oh, ow), quant)
        self.emit("QUANTIZED_CONCAT" if dtype == U8 else "CONCAT", name, [buf], [out], ranges=ranges)
        return out

    # ---- graph outputs --------------------------------------------------------------------------------------------
    def _outputs(self):
        for name in self.graph.outputs:
            v = self.values[name]
            info = {"shape": v.shape, "layout": "chw" if len(v.shape) == 3 else "flat"}
            if self.softmax_outputs:
                if len(v.shape) == 3 and v.count not in v.shape:
                    self.problem(name, f"softmax=True needs vector outputs; output '{name}' is a {v.shape} map")
                    continue
                nv = self.natural(v)
                src = self.need(nv, F32)
                buf = self.buffer(name + ":softmax", MAIN, F32, (v.count,))
                self.emit("SOFTMAX", name, [src], [buf], count=v.count)
                info["dtype"] = F32
            elif self.dequantize_outputs:
                buf = self.need(self.natural(v), F32)
                info["dtype"] = F32
            else:
                nv = self.natural(v)
                buf = self.need(nv, U8)
                info["dtype"] = U8
                info["quant"] = nv.quant
            self.outputs.append((name, buf, info))

    def _check_first_layer(self):
        if not self.layers:
            self.problems.append("the model lowers to no device layer; a K210 kmodel needs a conv or a dense layer")
            return
        first = self.layers[0]
        name = first.type_name
        if self.input_kind == "kpu" and not (first.on_kpu and first.inputs[0] is self.input_buffer):
            self.problems.append(f"the first device layer is {name} (from '{first.node}'); the K210 loader "
                                 f"places the input image only for a first K210_CONV")
        if self.input_kind == "float" and name != "FULLY_CONNECTED":
            self.problems.append(f"the first device layer is {name} (from '{first.node}'); the K210 loader "
                                 f"starts a float-input model only with FULLY_CONNECTED (a Dense layer)")


def _uniform_quant(scale, offset):
    """One Quant for all channels when they share scale and offset and the zero point is an integer."""
    scale, offset = np.asarray(scale, np.float64), np.asarray(offset, np.float64)
    if np.ptp(scale) > 1e-12 * abs(scale[0]) or np.ptp(offset) > 1e-12 * max(1.0, abs(offset[0])):
        return None
    zp = -offset[0] / scale[0]
    if abs(zp - round(zp)) > 1e-6 or not 0 <= round(zp) <= 255:
        return None
    return Quant(scale[0], int(round(zp)))
