"""C source generation: <name>.h and <name>.c for a lowered, planned int8 program.

EMITTERS[kind](gen, index, step) returns the C statements of one kernel call and declares the constant
arrays and parameter structs it needs through gen.array() / gen.struct().
"""
import numpy as np

from ... import __version__
from ...names import c_identifier  # noqa: F401 -- re-exported: the C platform names models with it
from .cmsis import cmsis_scratch_bytes, gemm_taps, pair_weights, pairs_place, scratch_function
from .columns import column_bytes, folded_bias, needs_column
from .planner import free_range

C_TYPES = {np.dtype(np.int8): "int8_t", np.dtype(np.int32): "int32_t"}
EMITTERS = {}
CMSIS_GUARD = "EMC_USE_CMSIS_NN"


def emits(*kinds):
    def wrap(fn):
        for kind in kinds:
            EMITTERS[kind] = fn
        return fn
    return wrap


def c_float(value):
    """An exact C float literal of value rounded to float32 (hexadecimal, C99)."""
    return float(np.float32(value)).hex() + "f"


def c_comment(text):
    return str(text).replace("*/", "* /")


class Generator:
    """Collects constant data and the body of <name>_run while the emitters walk the steps."""

    def __init__(self, name, program, plan):
        self.name = c_identifier(name)
        self.upper = self.name.upper()
        self.program = program
        self.plan = plan
        self.data = []
        self.body = []
        self.gemm = {}          # CMSIS-NN builds: step index -> cmsis.pairs_place of convs run as emc_conv2d_pairs_s8
        for index, step in enumerate(program.steps):
            place = pairs_place(step, *free_range(plan, index))
            if place is not None:
                self.gemm[index] = place

    # ---- pointers and constants ------------------------------------------------------------------------------
    def ptr(self, tensor_name):
        """C expression of a tensor's first byte: in the arena, or in the caller's buffer of one input / output."""
        region, offset = self.plan.where(tensor_name)
        if region == "arena":
            return f"A + {offset}"
        names = self.program.inputs if region == "input" else self.program.outputs
        start = 0
        for k, name in enumerate(names):
            size = self.program.tensors[name].size
            if offset < start + size or k == len(names) - 1:
                return f"{'in_bufs' if region == 'input' else 'out_bufs'}[{k}] + {offset - start}"
            start += size
        raise AssertionError(f"no {region} holds offset {offset}")

    def array(self, index, key, values, guard=None, unless=None):
        """Declare a constant array L<index>_<key>; with guard, only when that macro is defined; with unless, only
        when that macro is not (else the name is a null pointer: builds with it read another form)."""
        values = np.ascontiguousarray(values)
        ident = f"L{index}_{key}"
        ctype = C_TYPES[values.dtype]
        flat = values.reshape(-1)
        lines = []
        for start in range(0, max(flat.size, 1), 24):
            lines.append("    " + ", ".join(str(int(v)) for v in flat[start:start + 24]))
        if flat.size == 0:
            lines = ["    0"]
        decl = f"static const {ctype} {ident}[{max(flat.size, 1)}] = {{\n" + ",\n".join(lines) + "\n};"
        if unless:
            decl = f"#ifndef {unless}\n{decl}\n#else\n#define {ident} ((const {ctype} *)0)\n#endif"
        self.data.append(f"#ifdef {guard}\n{decl}\n#endif" if guard else decl)
        return ident

    def struct(self, index, ctype, fields, guarded=None):
        """Declare the parameter struct L<index>_p; `guarded` fields are set only under #ifdef EMC_USE_CMSIS_NN."""
        ident = f"L{index}_p"
        body = ", ".join(f".{k} = {v}" for k, v in fields.items())
        if guarded:
            extra = ", ".join(f".{k} = {v}" for k, v in guarded.items())
            body = f"{body}\n#ifdef {CMSIS_GUARD}\n    , {extra}\n#endif\n"
        self.data.append(f"static const {ctype} {ident} = {{{body}}};")
        return ident

    def linear_arrays(self, index, step, weights_unless=None):
        """The constant arrays of a conv / depthwise / dense call: the portable kernels' folded bias, and the
        unfolded bias only for CMSIS-NN builds; weights_unless: a macro under which the weights are not needed (the
        conv reads its gemm_pairs form then)."""
        fields = self.arrays(index, step, ("mult", "shift", "lut"))
        fields["weights"] = self.array(index, "weights", step.arrays["weights"], unless=weights_unless)
        fields["kbias"] = self.array(index, "kbias", folded_bias(step))
        guarded = {"bias": self.array(index, "bias", step.arrays["bias"], guard=CMSIS_GUARD)}
        return fields, guarded

    @property
    def column_size(self):
        return column_bytes(self.program.steps)

    def arrays(self, index, step, keys):
        return {k: (self.array(index, k, step.arrays[k]) if k in step.arrays else "NULL") for k in keys}

    # ---- files ---------------------------------------------------------------------------------------------------
    def generate(self):
        for index, step in enumerate(self.program.steps):
            out_shape = "x".join(map(str, self.program.tensors[step.output].shape))
            self.body.append(f"    /* {index}: {c_comment(step.node)} -> {step.kind} {out_shape} */")
            self.body.extend("    " + line for line in EMITTERS[step.kind](self, index, step))
            self.body.append(f"    EMC_MARK({index});")
        return {f"{self.name}.h": self.header(), f"{self.name}.c": self.source()}

    def _io_defines(self, kind, names):
        lines, offset = [], 0
        for i, name in enumerate(names):
            t = self.program.tensors[name]
            tag = f"{self.upper}_{kind}{i}"
            lines += [f"/* {kind.lower()} {i}: '{c_comment(name.split(':')[0])}', shape {'x'.join(map(str, t.shape))} "
                      f"(NHWC), real = (q - zero_point) * scale */",
                      f"#define {tag}_OFFSET {offset}",
                      f"#define {tag}_SIZE {t.size}",
                      f"#define {tag}_SCALE {c_float(t.scale)}",
                      f"#define {tag}_ZERO_POINT {t.zero_point}"]
            offset += t.size
        return lines

    def header(self):
        p, u = self.program, self.upper
        lines = [f"/* {self.name}.h: int8 C model generated by emc {__version__}; do not edit. */",
                 f"#ifndef {u}_H", f"#define {u}_H", "", "#include <stdint.h>", "",
                 "#ifdef __cplusplus", 'extern "C" {', "#endif", "",
                 f"#define {u}_INPUT_COUNT {len(p.inputs)}",
                 f"#define {u}_OUTPUT_COUNT {len(p.outputs)}",
                 f"#define {u}_INPUT_SIZE {self.plan.input_bytes}   /* int8 values of all inputs, back to back */",
                 f"#define {u}_OUTPUT_SIZE {self.plan.output_bytes}  /* int8 values of all outputs, back to back */",
                 f"#define {u}_ARENA_SIZE {self.plan.arena_bytes}   /* static working memory inside {self.name}.c */",
                 f"#define {u}_COLUMN_SIZE {self.column_size}   /* the conv kernels' window buffer inside {self.name}.c */",
                 ""]
        lines += self._io_defines("INPUT", p.inputs) + [""] + self._io_defines("OUTPUT", p.outputs) + [""]
        lines += [
            "/* Run the network on int8 input codes. `in` holds every input back to back (INPUTi_OFFSET), `out`",
            " * receives every output back to back (OUTPUTi_OFFSET). Not reentrant: one static arena. Returns 0. */",
            f"int {self.name}_run(const int8_t *in, int8_t *out);",
            "",
            "/* The same with a buffer per input and per output: inputs[i] holds input i (INPUTi_SIZE codes),",
            " * outputs[i] receives output i (OUTPUTi_SIZE codes). Returns 0. */",
            f"int {self.name}_run_buffers(const int8_t *const *inputs, int8_t *const *outputs);",
            "",
            "/* Float convenience wrappers: q = clamp(floor(x / scale + zero_point + 0.5)); x = (q - zero_point) * scale. */",
            f"void {self.name}_quantize_input(const float *x, int8_t *q);",
            f"void {self.name}_dequantize_output(const int8_t *q, float *x);",
            f"int {self.name}_run_float(const float *in, float *out);",
            "",
            "#ifdef EMC_USE_CMSIS_NN",
            "/* CMSIS-NN scratch: the maximum of CMSIS-NN's *_get_buffer_size over the layers on a core with the DSP",
            f" * extension; {self.name}_cmsis_scratch_bytes() asks CMSIS-NN on the running core (define it for MVE). */",
            f"#ifndef {u}_CMSIS_SCRATCH_SIZE",
            f"#define {u}_CMSIS_SCRATCH_SIZE {cmsis_scratch_bytes(self.program.steps, self.gemm)}",
            "#endif",
            f"int32_t {self.name}_cmsis_scratch_bytes(void);",
            "#endif",
            "", "#ifdef __cplusplus", "}", "#endif", "", f"#endif /* {u}_H */", ""]
        return "\n".join(lines)

    def _buffer_arrays(self):
        """<name>_run's pointer arrays into its back-to-back in / out buffers, for <name>_run_buffers."""
        lines = []
        for kind, ctype, names, buf in (("in_bufs", "const int8_t *", self.program.inputs, "in"),
                                        ("out_bufs", "int8_t *", self.program.outputs, "out")):
            offsets, start = [], 0
            for name in names:
                offsets.append(f"{buf} + {start}")
                start += self.program.tensors[name].size
            lines.append(f"    {ctype}{kind}[{max(len(names), 1)}];")
            lines += [f"    {kind}[{k}] = {value};" for k, value in enumerate(offsets)]
        return lines

    def _convert_loop(self, names, fn_head, body_line):
        lines = [fn_head, "{", "    int32_t i;"]
        offset = 0
        for name in names:
            t = self.program.tensors[name]
            lines.append(f"    for (i = {offset}; i < {offset + t.size}; ++i) {{")
            lines.extend("        " + b.format(scale=c_float(t.scale), zp=t.zero_point) for b in body_line)
            lines.append("    }")
            offset += t.size
        lines.append("}")
        return lines

    def source(self):
        u, n = self.upper, self.name
        lines = [f"/* {n}.c: int8 C model generated by emc {__version__}; do not edit. */",
                 f'#include "{n}.h"', '#include "emc_nn.h"', "", "#ifndef NULL", "#define NULL ((void *)0)",
                 "#endif", "",
                 "/* -DEMC_PROFILE_HOOK=f calls void f(int32_t k) before the first kernel (k = -1) and after kernel k. */",
                 "#ifdef EMC_PROFILE_HOOK", "void EMC_PROFILE_HOOK(int32_t k);", "#define EMC_MARK(k) EMC_PROFILE_HOOK(k)",
                 "#else", "#define EMC_MARK(k) ((void)0)", "#endif", ""]
        if self.column_size:
            lines += [f"static int8_t {n}_col[{u}_COLUMN_SIZE];   /* one gathered convolution window */", ""]
        lines += [f"static int32_t {n}_arena[({u}_ARENA_SIZE + 3) / 4 + 1];   /* 4-byte aligned */", ""]
        lines += ["#ifdef EMC_USE_CMSIS_NN",
                  f"static int32_t {n}_scratch[({u}_CMSIS_SCRATCH_SIZE + 3) / 4 + ({u}_CMSIS_SCRATCH_SIZE == 0)];",
                  "#endif", ""]
        lines += self.data
        lines += ["", f"int {n}_run(const int8_t *in, int8_t *out)", "{"]
        lines += self._buffer_arrays()
        lines += [f"    return {n}_run_buffers(in_bufs, out_bufs);", "}", "",
                  f"int {n}_run_buffers(const int8_t *const *in_bufs, int8_t *const *out_bufs)", "{",
                  f"    int8_t *A = (int8_t *){n}_arena;",
                  "    (void)A; (void)in_bufs; (void)out_bufs;",
                  "#ifdef EMC_USE_CMSIS_NN",
                  f"    emc_cmsis_buf = {n}_scratch;",
                  f"    emc_cmsis_buf_size = {u}_CMSIS_SCRATCH_SIZE;",
                  "#endif",
                  "    EMC_MARK(-1);"]
        lines += self.body
        lines += ["    return 0;", "}", ""]
        lines += scratch_function(n, self.program.steps, self.gemm)
        lines += self._convert_loop(self.program.inputs, f"void {n}_quantize_input(const float *x, int8_t *q)", [
            "float t = x[i] / {scale};",
            "int32_t v;",
            "t = t + (float)({zp});",
            "t = t + 0.5f;",
            "if (!(t >= -129.0f)) t = -129.0f;    /* NaN too */",
            "if (t > 128.0f) t = 128.0f;",
            "v = (int32_t)t;",
            "if ((float)v > t) --v;                /* floor */",
            "q[i] = (int8_t)(v < -128 ? -128 : (v > 127 ? 127 : v));"])
        lines.append("")
        lines += self._convert_loop(self.program.outputs, f"void {n}_dequantize_output(const int8_t *q, float *x)",
                                    ["x[i] = (float)((int32_t)q[i] - ({zp})) * {scale};"])
        lines += ["", f"int {n}_run_float(const float *in, float *out)", "{",
                  f"    static int8_t qin[{u}_INPUT_SIZE + 1], qout[{u}_OUTPUT_SIZE + 1];",
                  "    int rc;", f"    {n}_quantize_input(in, qin);", f"    rc = {n}_run(qin, qout);",
                  f"    {n}_dequantize_output(qout, out);", "    return rc;", "}", ""]
        return "\n".join(lines)


# ---- emitters --------------------------------------------------------------------------------------------------------
def _conv_fields(step, depth_mult):
    p = step.params
    (ih, iw, ic), (oh, ow, oc) = p["in_shape"], p["out_shape"]
    return {"in_h": ih, "in_w": iw, "in_c": ic, "out_h": oh, "out_w": ow, "out_c": oc,
            "kernel_h": p["kernel"][0], "kernel_w": p["kernel"][1], "stride_h": p["stride"][0],
            "stride_w": p["stride"][1], "dilation_h": p["dilation"][0], "dilation_w": p["dilation"][1],
            "pad_top": p["pad"][0], "pad_left": p["pad"][1], "depth_mult": depth_mult,
            "in_zp": p["in_zp"], "out_zp": p["out_zp"], "act_min": p["act_min"], "act_max": p["act_max"]}


@emits("conv2d", "depthwise_conv2d")
def _conv(gen, i, step):
    fields = _conv_fields(step, step.params.get("depth_mult", 1))
    arrays, guarded = gen.linear_arrays(i, step, weights_unless=CMSIS_GUARD if i in gen.gemm else None)
    fields.update(arrays)
    fields["col"] = f"{gen.name}_col" if needs_column(step) else "NULL"
    if i in gen.gemm:
        place = gen.gemm[i]
        cols = f"(int8_t *){gen.name}_scratch" if place == "scratch" else f"(int8_t *){gen.name}_arena + {place}"
        guarded.update(gemm_cols=cols, gemm_taps=gemm_taps(step),
                       gemm_pairs=gen.array(i, "gemm_pairs", pair_weights(step), guard=CMSIS_GUARD))
    ident = gen.struct(i, "emc_conv_params", fields, guarded)
    fn = "emc_conv2d_s8" if step.kind == "conv2d" else "emc_depthwise_conv2d_s8"
    return [f"{fn}(&{ident}, {gen.ptr(step.inputs[0])}, {gen.ptr(step.output)});"]


@emits("conv2d_transpose")
def _conv_transpose(gen, i, step):
    """The conv parameter struct; pad_top / pad_left are the crops of the full transposed output."""
    fields = _conv_fields(step, 1)
    fields.update(gen.arrays(i, step, ("weights", "bias", "mult", "shift", "lut")))
    ident = gen.struct(i, "emc_conv_params", fields)
    return [f"emc_conv2d_transpose_s8(&{ident}, {gen.ptr(step.inputs[0])}, {gen.ptr(step.output)});"]


@emits("dense")
def _dense(gen, i, step):
    p = step.params
    fields = {k: p[k] for k in ("rows", "in_features", "out_features", "in_zp", "out_zp", "act_min", "act_max")}
    arrays, guarded = gen.linear_arrays(i, step)
    fields.update(arrays)
    ident = gen.struct(i, "emc_dense_params", fields, guarded)
    return [f"emc_dense_s8(&{ident}, {gen.ptr(step.inputs[0])}, {gen.ptr(step.output)});"]


@emits("channel_scale")
def _channel_scale(gen, i, step):
    fields = {k: step.params[k] for k in ("count", "channels", "in_zp", "out_zp")}
    fields.update(gen.arrays(i, step, ("weights", "bias", "mult", "shift")))
    ident = gen.struct(i, "emc_channel_scale_params", fields)
    return [f"emc_channel_scale_s8(&{ident}, {gen.ptr(step.inputs[0])}, {gen.ptr(step.output)});"]


@emits("max_pool", "avg_pool")
def _pool(gen, i, step):
    p = step.params
    (ih, iw, c), (oh, ow, _) = p["in_shape"], p["out_shape"]
    ident = gen.struct(i, "emc_pool_params", {
        "in_h": ih, "in_w": iw, "channels": c, "out_h": oh, "out_w": ow, "pool_h": p["pool"][0],
        "pool_w": p["pool"][1], "stride_h": p["stride"][0], "stride_w": p["stride"][1], "pad_top": p["pad"][0],
        "pad_left": p["pad"][1]})
    return [f"emc_{step.kind}_s8(&{ident}, {gen.ptr(step.inputs[0])}, {gen.ptr(step.output)});"]


@emits("global_max_pool", "global_avg_pool")
def _global_pool(gen, i, step):
    p = step.params
    h, w, c = p["in_shape"]
    ident = gen.struct(i, "emc_global_pool_params", {
        "in_h": h, "in_w": w, "channels": c, "in_zp": p.get("in_zp", 0), "out_zp": p.get("out_zp", 0),
        "mult": p.get("mult", 0), "shift": p.get("shift", 0)})
    return [f"emc_{step.kind}_s8(&{ident}, {gen.ptr(step.inputs[0])}, {gen.ptr(step.output)});"]


def _inputs_block(gen, step, call):
    """A block declaring the array of input pointers a multi-input kernel takes."""
    lines = ["{", f"    const int8_t *ins[{len(step.inputs)}];"]
    lines += [f"    ins[{k}] = {gen.ptr(name)};" for k, name in enumerate(step.inputs)]
    return lines + [f"    {call}", "}"]


def _dims(step):
    return "{" + ", ".join(str(int(d)) for d in step.params["dims"]) + "}"


@emits("add")
def _add(gen, i, step):
    p = step.params
    fields = {"n": p["n"], "dims": _dims(step)}
    arrays = gen.arrays(i, step, ("strides", "in_zp", "in_mult", "in_shift", "sign"))
    fields.update(arrays)
    fields.update({k: p[k] for k in ("left_shift", "out_mult", "out_shift", "out_zp")})
    ident = gen.struct(i, "emc_add_params", fields)
    return _inputs_block(gen, step, f"emc_add_s8(&{ident}, ins, {gen.ptr(step.output)});")


@emits("mul")
def _mul(gen, i, step):
    p = step.params
    fields = {"dims": _dims(step)}
    fields.update(gen.arrays(i, step, ("strides", "in_zp")))
    fields.update({k: p[k] for k in ("out_mult", "out_shift", "out_zp")})
    ident = gen.struct(i, "emc_mul_params", fields)
    return _inputs_block(gen, step, f"emc_mul_s8(&{ident}, ins, {gen.ptr(step.output)});")


@emits("maxmin")
def _maxmin(gen, i, step):
    p = step.params
    fields = {"n": p["n"], "is_max": p["is_max"], "dims": _dims(step)}
    fields.update(gen.arrays(i, step, ("strides", "in_zp", "in_mult", "in_shift")))
    fields["out_zp"] = p["out_zp"]
    ident = gen.struct(i, "emc_maxmin_params", fields)
    return _inputs_block(gen, step, f"emc_maxmin_s8(&{ident}, ins, {gen.ptr(step.output)});")


@emits("concat")
def _concat(gen, i, step):
    p = step.params
    fields = {"n": p["n"], "outer": p["outer"]}
    fields.update(gen.arrays(i, step, ("inner", "same", "in_zp", "in_mult", "in_shift")))
    fields["out_zp"] = p["out_zp"]
    ident = gen.struct(i, "emc_concat_params", fields)
    return _inputs_block(gen, step, f"emc_concat_s8(&{ident}, ins, {gen.ptr(step.output)});")


@emits("requant_clamp")
def _requant(gen, i, step):
    ident = gen.struct(i, "emc_requant_params", {k: step.params[k] for k in (
        "count", "in_zp", "out_zp", "mult", "shift", "act_min", "act_max")})
    return [f"emc_requant_clamp_s8(&{ident}, {gen.ptr(step.inputs[0])}, {gen.ptr(step.output)});"]


@emits("leaky_relu", "prelu")
def _leaky(gen, i, step):
    p = step.params
    fields = {k: p.get(k, 0) for k in ("count", "period", "in_zp", "out_zp", "mult_pos", "shift_pos", "mult_neg",
                                       "shift_neg")}
    fields.update(gen.arrays(i, step, ("alpha",)))
    ident = gen.struct(i, "emc_leaky_params", fields)
    return [f"emc_{step.kind}_s8(&{ident}, {gen.ptr(step.inputs[0])}, {gen.ptr(step.output)});"]


@emits("lut")
def _lut(gen, i, step):
    table = gen.array(i, "table", step.arrays["table"])
    return [f"emc_lut_s8({step.params['count']}, {table}, {gen.ptr(step.inputs[0])}, {gen.ptr(step.output)});"]


@emits("softmax")
def _softmax(gen, i, step):
    table = gen.array(i, "table", step.arrays["table"])
    p = step.params
    return [f"emc_softmax_s8({p['rows']}, {p['depth']}, {p['recip']}, {table}, {gen.ptr(step.inputs[0])}, "
            f"{gen.ptr(step.output)});"]


@emits("pad", "crop")
def _window(gen, i, step):
    p = step.params
    (ih, iw, c), (oh, ow, _) = p["in_shape"], p["out_shape"]
    top, left = p["pad"] if step.kind == "pad" else p["crop"]
    ident = gen.struct(i, "emc_window_params", {"in_h": ih, "in_w": iw, "channels": c, "out_h": oh, "out_w": ow,
                                                "top": top, "left": left, "value": p.get("value", 0)})
    return [f"emc_{step.kind}_s8(&{ident}, {gen.ptr(step.inputs[0])}, {gen.ptr(step.output)});"]


@emits("upsample")
def _upsample(gen, i, step):
    h, w, c = step.params["in_shape"]
    fh, fw = step.params["factor"]
    ident = gen.struct(i, "emc_upsample_params", {"in_h": h, "in_w": w, "channels": c, "factor_h": fh,
                                                  "factor_w": fw})
    return [f"emc_upsample_s8(&{ident}, {gen.ptr(step.inputs[0])}, {gen.ptr(step.output)});"]


@emits("copy")
def _copy(gen, i, step):
    return [f"memcpy({gen.ptr(step.output)}, {gen.ptr(step.inputs[0])}, {step.params['count']});"]
