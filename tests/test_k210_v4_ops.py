"""Every v4 opcode the reference kmodels do not exercise, on small hand-packed v4 files (packed here with Python's
struct module from the spec's byte tables, not with emc's structures), against plain references written here."""
import math
import struct as S

import numpy as np
import pytest

import emc

MEM = {"const": 0, "main": 1, "kpu": 2}
DT = {"f32": 0, "u8": 1}
FLT_MAX = float(np.finfo(np.float32).max)
FULL = (-FLT_MAX, FLT_MAX)
OP = {"binary": 0x00, "concat": 0x01, "conv2d": 0x02, "dequantize": 0x03, "matmul": 0x04, "pad": 0x05,
      "quantize": 0x06, "reduce": 0x07, "reduce_window2d": 0x08, "memory_copy": 0x09, "resize_image": 0x0A,
      "softmax": 0x0B, "transpose": 0x0C, "strided_slice": 0x0D, "unary": 0x0E, "quantized_conv2d": 0x0F,
      "quantized_matmul": 0x10, "quantized_binary": 0x11, "table_lookup1d": 0x12, "conv2d_transpose": 0x13,
      "nnil_unary_method": 0x14, "cpu_conv2d": 0x1001, "cpu_depthwise_conv2d": 0x1002, "cpu_reduce_window2d": 0x1003,
      "cpu_quantized_conv2d": 0x1004, "cpu_quantized_depthwise_conv2d": 0x1005, "kpu_upload": 0x2001,
      "kpu_conv2d": 0x2002}
RNG = np.random.default_rng(7)


# ---- packing -----------------------------------------------------------------------------------------------------
def rng_(mem, dt, start, size):
    return S.pack("<4I", MEM[mem], DT[dt], start, size)


def shp(*dims):
    return S.pack("<4i", *dims)


def act(lo, hi):
    return S.pack("<2f", lo, hi)


def model(nodes, main_mem, in_range, in_shape, outputs, constants=b""):
    """A v4 file: one input, the given outputs, nodes = [(opcode name, body bytes)], bodies 8-aligned."""
    constants = constants + bytes(-len(constants) % 8)
    head = S.pack("<10I", 0x4B4D444C, 4, 0, 1, len(constants), main_mem, len(nodes), 1, len(outputs), 0)
    bodies = [body + bytes(-len(body) % 8) for _, body in nodes]
    parts = [head, in_range, shp(*in_shape)] + list(outputs) + [constants]
    parts += [S.pack("<2I", OP[name], len(b)) for (name, _), b in zip(nodes, bodies)]
    return b"".join(parts + bodies)


def run(data, x):
    return emc.run_kmodel(emc.load_kmodel(data), x)


def f32_model(node, body, x_shape, out_count, constants=b"", out_dtype="f32", in_dtype="f32", main_mem=None):
    """One node reading main[0:] (the input, x_shape) and writing main[4096:] (out_count elements)."""
    size = 4 if in_dtype == "f32" else 1
    osize = 4 if out_dtype == "f32" else 1
    in_r = rng_("main", in_dtype, 0, int(np.prod(x_shape)) * size)
    out_r = rng_("main", out_dtype, 4096, out_count * osize)
    return model([(node, body(in_r, out_r))], main_mem or 4096 + out_count * osize + 64, in_r, x_shape, [out_r],
                 constants)


# ---- plain references --------------------------------------------------------------------------------------------
def out_size(size, f, s, d, before, after):
    return (size + before + after - ((f - 1) * d + 1) + s) // s


def ref_conv(x, w, bias, groups, stride, dilation, pads, in_off=0, w_off=0, integer=False):
    """NCHW grouped convolution over valid taps only; float64 or exact integers."""
    n, c, h, wd = x.shape
    oc, g_ic, fh, fw = w.shape
    g_oc = oc // groups
    (pt, pb), (pl, pr) = pads
    oh, ow = out_size(h, fh, stride[0], dilation[0], pt, pb), out_size(wd, fw, stride[1], dilation[1], pl, pr)
    out = np.zeros((n, oc, oh, ow), np.int64 if integer else np.float64)
    for b in range(n):
        for o in range(oc):
            g = o // g_oc
            for oy in range(oh):
                for ox in range(ow):
                    acc = int(bias[o]) if integer else float(bias[o])
                    for i in range(g_ic):
                        for ky in range(fh):
                            for kx in range(fw):
                                iy = oy * stride[0] - pt + ky * dilation[0]
                                ix = ox * stride[1] - pl + kx * dilation[1]
                                if 0 <= iy < h and 0 <= ix < wd:
                                    xv, wv = x[b, g * g_ic + i, iy, ix], w[o, i, ky, kx]
                                    acc += (int(xv) + in_off) * (int(wv) + w_off) if integer else float(xv) * float(wv)
                    out[b, o, oy, ox] = acc
    return out


def mcs(v, mul, shift):
    """(v * mul + 2^(shift-1)) >> shift with Python integers (round half up)."""
    p = v * mul
    return (p + (1 << (shift - 1))) >> shift if shift > 0 else p


def trunc_div(a, b):
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def window_ref(x, f, s, pads, op):
    n, c, h, w = x.shape
    (pt, pb), (pl, pr) = pads
    oh, ow = out_size(h, f[0], s[0], 1, pt, pb), out_size(w, f[1], s[1], 1, pl, pr)
    out = np.zeros((n, c, oh, ow))
    for oy in range(oh):
        for ox in range(ow):
            ys = [y for y in range(oy * s[0] - pt, oy * s[0] - pt + f[0]) if 0 <= y < h]
            xs = [v for v in range(ox * s[1] - pl, ox * s[1] - pl + f[1]) if 0 <= v < w]
            patch = x[:, :, ys][:, :, :, xs].reshape(n, c, -1)
            out[:, :, oy, ox] = {"max": patch.max, "min": patch.min, "mean": patch.mean, "sum": patch.sum}[op](axis=2)
    return out


# ---- elementwise -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op, fn", [(0, np.add), (1, np.subtract), (2, np.multiply), (3, np.divide),
                                    (4, np.minimum), (5, np.maximum)])
def test_binary_broadcasts_and_clamps(op, fn):
    a = RNG.normal(size=(1, 2, 3, 4)).astype(np.float32)
    b = (RNG.normal(size=(1, 1, 3, 1)) + 3).astype(np.float32)
    const = b.tobytes()

    def body(in_r, out_r):
        return in_r + rng_("const", "f32", 0, 12) + out_r + S.pack("<I", op) + shp(1, 2, 3, 4) + shp(1, 1, 3, 1) + \
            shp(1, 2, 3, 4) + act(-1.0, 2.0)
    got = run(f32_model("binary", body, (1, 2, 3, 4), 24, const), a)[0]
    assert np.array_equal(got, np.clip(fn(a, b), -1, 2).astype(np.float32).reshape(-1))


@pytest.mark.parametrize("op", range(6))
def test_quantized_binary_matches_integer_reference(op):
    a = RNG.integers(0, 256, (1, 2, 3, 4), dtype=np.uint8)
    b = RNG.integers(0, 256, (1, 2, 1, 4), dtype=np.uint8)
    out_mul, out_shift = {2: (3, 20), 3: (1, 0)}.get(op, (655, 16))      # keep most results inside 0..255
    params = (-10, 12345, 8, 1, 23456, 9, 7, out_mul, out_shift)     # a off/mul/shift, b ..., out offset/mul/shift

    def body(in_r, out_r):
        return in_r + rng_("const", "u8", 0, 8) + out_r + S.pack("<I", op) + shp(1, 2, 3, 4) + shp(1, 2, 1, 4) + \
            shp(1, 2, 3, 4) + S.pack("<9i", *params)
    got = run(f32_model("quantized_binary", body, (1, 2, 3, 4), 24, b.tobytes(), "u8", "u8"), a)[0]
    a_off, a_mul, a_sh, b_off, b_mul, b_sh, o_off, o_mul, o_sh = params
    ops = [lambda p, q: p + q, lambda p, q: p - q, lambda p, q: p * q, lambda p, q: trunc_div(p + trunc_div(q, 2), q),
           min, max]
    want = []
    for idx in np.ndindex(1, 2, 3, 4):
        p = mcs(int(a[idx]) + a_off, a_mul, a_sh)
        q = mcs(int(b[idx[0], idx[1], 0, idx[3]]) + b_off, b_mul, b_sh)
        want.append(min(255, max(0, mcs(ops[op](p, q), o_mul, o_sh) + o_off)))
    assert got.dtype == np.uint8 and got.tolist() == want


@pytest.mark.parametrize("op, fn, positive", [(0, np.abs, False), (1, np.ceil, False), (2, np.cos, False),
                                              (3, np.exp, False), (4, np.floor, False), (5, np.log, True),
                                              (6, np.negative, False), (7, lambda v: 1 / np.sqrt(v), True),
                                              (8, np.sin, False), (9, np.square, False)])
def test_unary(op, fn, positive):
    x = (RNG.uniform(0.1, 3, 40) if positive else RNG.uniform(-3, 3, 40)).astype(np.float32)
    got = run(f32_model("unary", lambda i, o: i + o + S.pack("<I", op), (1, 1, 1, 40), 40), x)[0]
    assert np.allclose(got, fn(x.astype(np.float64)), rtol=2e-7, atol=0)


def test_nnil_program_and_its_checks():
    code = bytes([0x03, 0x06]) + S.pack("<f", 2.0) + bytes([0x42, 0x05, 0x40, 0x04, 0x06]) + S.pack("<f", 6.0) + \
        bytes([0x80, 0xA0])                                     # clamp(x * 2 + 1, 0, 6)
    x = RNG.uniform(-3, 5, 16).astype(np.float32)
    got = run(f32_model("nnil_unary_method", lambda i, o: i + o + code, (1, 1, 1, 16), 16), x)[0]
    assert np.array_equal(got, np.clip(x * np.float32(2) + np.float32(1), 0, 6))
    # min(max(x*x - |x|, 1), exp(-x)) / 3 through dup, pop, sub, max, neg, exp, min, div
    code = bytes([0x03, 0x01, 0x42, 0x03, 0x20, 0x41, 0x05, 0x45, 0x03, 0x26, 0x23, 0x44, 0x06]) + \
        S.pack("<f", 3.0) + bytes([0x43, 0x01, 0x02, 0xA0])
    got = run(f32_model("nnil_unary_method", lambda i, o: i + o + code, (1, 1, 1, 16), 16), x)[0]
    v = x.astype(np.float64)
    assert np.allclose(got, np.minimum(np.maximum(v * v - np.abs(v), 1), np.exp(-v)) / 3, rtol=1e-6)
    broken = f32_model("nnil_unary_method", lambda i, o: i + o + bytes([0x40, 0xA0]), (1, 1, 1, 16), 16)
    with pytest.raises(emc.KModelFormatError, match="underflow"):
        emc.load_kmodel(broken)


def test_quantize_rounds_half_away_and_saturates_and_dequantize():
    x = np.array([-6.25, 0.25, 1.75, 200.0, 0.0, 3.3], np.float32)    # x * 2 + 10: -2.5, 10.5, 13.5, 410, 10, 16.6
    q = run(f32_model("quantize", lambda i, o: i + o + S.pack("<if", 10, 2.0), (1, 1, 1, 6), 6, out_dtype="u8"), x)[0]
    assert q.tolist() == [0, 11, 14, 255, 10, 17]
    codes = np.arange(0, 256, 15, dtype=np.uint8)
    deq = run(f32_model("dequantize", lambda i, o: i + o + S.pack("<if", 37, 51.5), (1, 1, 1, codes.size),
                        codes.size, in_dtype="u8"), codes)[0]
    assert np.allclose(deq, (codes.astype(np.float64) - 37) / 51.5, rtol=1e-6, atol=1e-7)


def test_table_lookup_and_memory_copy():
    table = RNG.integers(0, 256, 256, dtype=np.uint8)
    x = RNG.integers(0, 256, 50, dtype=np.uint8)
    body = (lambda i, o: i + rng_("const", "u8", 0, 256) + o)
    got = run(f32_model("table_lookup1d", body, (1, 1, 1, 50), 50, table.tobytes(), "u8", "u8"), x)[0]
    assert np.array_equal(got, table[x])
    y = RNG.normal(size=12).astype(np.float32)
    assert np.array_equal(run(f32_model("memory_copy", lambda i, o: i + o, (1, 1, 1, 12), 12), y)[0], y)


# ---- shape ops ---------------------------------------------------------------------------------------------------
def test_concat_copies_blocks_per_outer_index():
    a = RNG.normal(size=(2, 3)).astype(np.float32)              # outer 2: a row, then b row, then a row ...
    b = RNG.normal(size=(2, 5)).astype(np.float32)
    in_r = rng_("main", "f32", 0, 24)
    out_r = rng_("main", "f32", 4096, 64)
    body = out_r + S.pack("<3I", 4, 2, 2) + in_r + rng_("const", "f32", 0, 40) + S.pack("<2i", 3, 5)
    got = run(model([("concat", body)], 4200, in_r, (1, 1, 2, 3), [out_r], b.tobytes()), a)[0]
    assert np.array_equal(got, np.concatenate([a, b], axis=1).reshape(-1))


def test_transpose_and_pad_with_crop():
    x = RNG.normal(size=(2, 3, 4, 5)).astype(np.float32)
    body = lambda i, o: i + o + shp(2, 3, 4, 5) + shp(2, 0, 3, 1)
    got = run(f32_model("transpose", body, (2, 3, 4, 5), 120), x)[0]
    assert np.array_equal(got, x.transpose(2, 0, 3, 1).reshape(-1))
    u = RNG.integers(0, 256, (1, 2, 4, 5), dtype=np.uint8)
    pads = [(0, 0), (1, 0), (-1, 2), (2, -3)]                 # negative = crop
    out_shape = (1, 3, 5, 4)

    def pad_body(i, o):
        return i + o + shp(1, 2, 4, 5) + b"".join(S.pack("<2i", *p) for p in pads) + S.pack("<I4B", 0, 9, 1, 2, 3)
    got = run(f32_model("pad", pad_body, (1, 2, 4, 5), 60, out_dtype="u8", in_dtype="u8"), u)[0]
    want = np.pad(u, [(max(a, 0), max(b, 0)) for a, b in pads], constant_values=9)   # u8: the first storage byte
    want = want[:, :, 1:, :want.shape[3] - 3]
    assert want.shape == out_shape and np.array_equal(got, want.reshape(-1))
    f = RNG.normal(size=(1, 1, 2, 3)).astype(np.float32)
    body = lambda i, o: i + o + shp(1, 1, 2, 3) + S.pack("<8i", 0, 0, 0, 0, 1, 1, 0, 1) + S.pack("<If", 0, 1.5)
    got = run(f32_model("pad", body, (1, 1, 2, 3), 16), f)[0]
    assert np.array_equal(got, np.pad(f, [(0, 0), (0, 0), (1, 1), (0, 1)], constant_values=1.5).reshape(-1))


def test_strided_slice_follows_its_loops():
    x = RNG.normal(size=(1, 3, 5, 4)).astype(np.float32)
    begin, end, strides = (0, 1, 4, 0), (1, 3, -1, 4), (1, 1, -2, 3)
    want = [x[a, b, c, d] for a in range(0, 1) for b in range(1, 3) for c in (4, 2, 0) for d in (0, 3)]

    def body(i, o):
        return i + o + shp(1, 3, 5, 4) + shp(*begin) + shp(*end) + shp(*strides) + S.pack("<5i", 0, 0, 0, 0, 0)
    assert np.array_equal(run(f32_model("strided_slice", body, (1, 3, 5, 4), 12), x)[0], np.array(want, np.float32))


# ---- reductions and softmax --------------------------------------------------------------------------------------
@pytest.mark.parametrize("op, name", [(0, "mean"), (1, "min"), (2, "max"), (3, "sum")])
def test_reduce(op, name):
    x = RNG.normal(size=(2, 3, 4, 5)).astype(np.float32)
    init = {0: 0.0, 1: FLT_MAX, 2: -FLT_MAX, 3: 0.0}[op]
    body = lambda i, o: i + o + S.pack("<I", op) + shp(2, 3, 4, 5) + shp(2, 1, 4, 1) + S.pack("<f", init)
    got = run(f32_model("reduce", body, (2, 3, 4, 5), 8), x)[0]
    want = getattr(x.astype(np.float64), name)(axis=(1, 3))
    assert np.allclose(got, want.reshape(-1), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("op, name", [(0, "mean"), (2, "max"), (3, "sum")])
def test_reduce_window2d(op, name):
    x = RNG.normal(size=(1, 2, 7, 8)).astype(np.float32)
    pads = ((1, 1), (0, 2))
    want = np.clip(window_ref(x.astype(np.float64), (3, 3), (2, 2), pads, name), -1.0, 1.5)

    def body(i, o):
        return i + o + S.pack("<I", op) + shp(1, 2, 7, 8) + S.pack("<4i", 1, 1, 0, 2) + \
            S.pack("<6i", 3, 3, 2, 2, 1, 1) + S.pack("<f", -FLT_MAX if op == 2 else 0.0) + act(-1.0, 1.5)
    got = run(f32_model("reduce_window2d", body, (1, 2, 7, 8), want.size), x)[0]
    assert np.allclose(got, want.reshape(-1), rtol=1e-6, atol=1e-6)


def test_softmax_with_beta():
    x = RNG.normal(size=(3, 5)).astype(np.float32) * 4
    got = run(f32_model("softmax", lambda i, o: i + o + S.pack("<2if", 5, 3, 0.5), (1, 1, 3, 5), 15), x)[0]
    e = np.exp(0.5 * (x - x.max(axis=1, keepdims=True)).astype(np.float64))
    assert np.allclose(got, (e / e.sum(axis=1, keepdims=True)).reshape(-1), rtol=1e-6)


# ---- resize ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode, align", [(0, 0), (0, 1), (1, 0)])
def test_resize_image_matches_tensorflow_legacy_resize(mode, align):
    tf = pytest.importorskip("tensorflow")
    x = RNG.uniform(0, 255, (1, 2, 5, 7)).astype(np.float32)
    body = lambda i, o: i + o + shp(1, 2, 5, 7) + S.pack("<2iI4B", 9, 4, mode, align, 0, 0, 0)
    got = run(f32_model("resize_image", body, (1, 2, 5, 7), 72), x)[0].reshape(1, 2, 9, 4)
    nhwc = x.transpose(0, 2, 3, 1)
    if mode == 0:
        ref = tf.compat.v1.image.resize_bilinear(nhwc, (9, 4), align_corners=bool(align)).numpy()
    else:
        ref = tf.compat.v1.image.resize_nearest_neighbor(nhwc, (9, 4), align_corners=False,
                                                         half_pixel_centers=False).numpy()
    assert np.allclose(got, ref.transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-3)
    u = x.astype(np.uint8)
    got_u8 = run(f32_model("resize_image", body, (1, 2, 5, 7), 72, out_dtype="u8", in_dtype="u8"), u)[0]
    if mode == 0:
        ref_u8 = np.floor(tf.compat.v1.image.resize_bilinear(u.transpose(0, 2, 3, 1).astype(np.float32), (9, 4),
                                                             align_corners=bool(align)).numpy() + 1e-4)
        assert np.abs(got_u8.astype(int) - ref_u8.transpose(0, 3, 1, 2).reshape(-1)).max() <= 1
    else:
        assert np.array_equal(got_u8, ref.transpose(0, 3, 1, 2).astype(np.uint8).reshape(-1))


# ---- matmul and convolutions -------------------------------------------------------------------------------------
def test_matmul_accumulates_in_float32_order():
    a = RNG.normal(size=(3, 5)).astype(np.float32)
    b = RNG.normal(size=(5, 4)).astype(np.float32)
    bias = RNG.normal(size=4).astype(np.float32)

    def body(in_r, out_r):
        return in_r + rng_("const", "f32", 0, 80) + out_r + S.pack("<3i", 3, 5, 4) + act(-1.0, FLT_MAX) + bias.tobytes()
    got = run(f32_model("matmul", body, (1, 1, 3, 5), 12, b.tobytes()), a)[0].reshape(3, 4)
    want = np.empty((3, 4), np.float32)
    for r in range(3):
        for c in range(4):
            v = bias[c]
            for i in range(5):
                v = np.float32(v + np.float32(a[r, i] * b[i, c]))
            want[r, c] = max(v, np.float32(-1))
    assert np.array_equal(got, want)


def test_quantized_matmul():
    a = RNG.integers(0, 256, (2, 6), dtype=np.uint8)
    b = RNG.integers(0, 256, (6, 3), dtype=np.uint8)
    bias = np.array([100, -2000, 30000], np.int32)
    params = (-128, -120, 1 << 20, 30, 100)                     # a off, b off, out mul, out shift, out offset

    def body(in_r, out_r):
        return in_r + rng_("const", "u8", 0, 18) + out_r + S.pack("<3i", 2, 6, 3) + S.pack("<5i", *params) + \
            bias.tobytes()
    got = run(f32_model("quantized_matmul", body, (1, 1, 2, 6), 6, b.tobytes(), "u8", "u8"), a)[0]
    acc = (a.astype(np.int64) - 128) @ (b.astype(np.int64) - 120) + bias
    want = [min(255, max(0, mcs(int(v), 1 << 20, 30) + 100)) for v in acc.reshape(-1)]
    assert got.tolist() == want


CONV_GEOMETRY = S.pack("<4i", 1, 2, 0, 1) + S.pack("<6i", 3, 2, 2, 1, 1, 2)   # pads h (1,2) w (0,1); 3x2 s(2,1) d(1,2)


def test_float_grouped_conv2d():
    x = RNG.normal(size=(1, 4, 7, 6)).astype(np.float32)
    w = RNG.normal(size=(6, 2, 3, 2)).astype(np.float32)
    bias = RNG.normal(size=6).astype(np.float32)
    want = np.clip(ref_conv(x, w, bias, 2, (2, 1), (1, 2), ((1, 2), (0, 1))), -0.5, 1.0)

    def body(i, o):
        return i + o + shp(1, 4, 7, 6) + S.pack("<2i", 2, 6) + CONV_GEOMETRY + act(-0.5, 1.0) + w.tobytes() + \
            bias.tobytes()
    got = run(f32_model("conv2d", body, (1, 4, 7, 6), want.size), x)[0]
    assert want.shape == (1, 6, 4, 5) and np.allclose(got, want.reshape(-1), rtol=1e-5, atol=1e-5)


def test_quantized_grouped_conv2d():
    x = RNG.integers(0, 256, (1, 4, 7, 6), dtype=np.uint8)
    w = RNG.integers(0, 256, (6, 2, 3, 2), dtype=np.uint8)
    bias = RNG.integers(-5000, 5000, 6).astype(np.int32)
    acc = ref_conv(x, w, bias, 2, (2, 1), (1, 2), ((1, 2), (0, 1)), in_off=-100, w_off=-128, integer=True)
    want = [min(255, max(0, mcs(int(v), 1 << 18, 28) + 3)) for v in acc.reshape(-1)]

    def body(i, o):
        return i + o + shp(1, 4, 7, 6) + S.pack("<2i", 2, 6) + CONV_GEOMETRY + \
            S.pack("<5i", -100, -128, 1 << 18, 28, 3) + bias.tobytes() + w.tobytes()
    got = run(f32_model("quantized_conv2d", body, (1, 4, 7, 6), len(want), out_dtype="u8", in_dtype="u8"), x)[0]
    assert got.tolist() == want


def test_conv2d_transpose_scatters_without_bias():
    x = RNG.normal(size=(1, 2, 3, 4)).astype(np.float32)
    w = RNG.normal(size=(3, 2, 3, 3)).astype(np.float32)      # out channels, in channels, fh, fw
    bias = np.full(3, 100.0, np.float32)
    oh, ow = 6, 8
    want = np.zeros((1, 3, oh, ow))
    for o in range(3):
        for i in range(2):
            for iy in range(3):
                for ix in range(4):
                    for ky in range(3):
                        for kx in range(3):
                            y, v = iy * 2 - 1 + ky, ix * 2 - 1 + kx
                            if 0 <= y < oh and 0 <= v < ow:
                                want[0, o, y, v] += float(x[0, i, iy, ix]) * float(w[o, i, ky, kx])

    def body(i, o):
        return i + o + shp(1, 2, 3, 4) + shp(1, 3, oh, ow) + S.pack("<i", 1) + S.pack("<4i", 1, 1, 1, 1) + \
            S.pack("<6i", 3, 3, 2, 2, 1, 1) + act(*FULL) + w.tobytes() + bias.tobytes()
    got = run(f32_model("conv2d_transpose", body, (1, 2, 3, 4), want.size), x)[0]
    assert np.allclose(got, want.reshape(-1), rtol=1e-5, atol=1e-5)


def test_cpu_nhwc_convolutions_and_pool():
    x = RNG.normal(size=(1, 7, 6, 4)).astype(np.float32)     # NHWC
    nchw = x.transpose(0, 3, 1, 2)
    geometry = ((1, 2), (0, 1))
    w = RNG.normal(size=(5, 3, 2, 4)).astype(np.float32)      # [oc][fh][fw][ic]
    bias = RNG.normal(size=5).astype(np.float32)
    want = ref_conv(nchw, w.transpose(0, 3, 1, 2), bias, 1, (2, 1), (1, 2), geometry).transpose(0, 2, 3, 1)
    body = (lambda i, o: i + o + shp(1, 7, 6, 4) + S.pack("<i", 5) + CONV_GEOMETRY + act(*FULL) + w.tobytes()
            + bias.tobytes())
    got = run(f32_model("cpu_conv2d", body, (1, 7, 6, 4), want.size), x)[0]
    assert np.allclose(got, want.reshape(-1), rtol=1e-5, atol=1e-5)

    dw = RNG.normal(size=(4, 3, 2)).astype(np.float32)        # [c][fh][fw]
    want = ref_conv(nchw, dw[:, None], bias[:4], 4, (2, 1), (1, 2), geometry).transpose(0, 2, 3, 1)
    body = lambda i, o: i + o + shp(1, 7, 6, 4) + CONV_GEOMETRY + act(*FULL) + dw.tobytes() + bias[:4].tobytes()
    got = run(f32_model("cpu_depthwise_conv2d", body, (1, 7, 6, 4), want.size), x)[0]
    assert np.allclose(got, want.reshape(-1), rtol=1e-5, atol=1e-5)

    u = RNG.integers(0, 256, (1, 7, 6, 4), dtype=np.uint8)
    wq = RNG.integers(0, 256, (5, 3, 2, 4), dtype=np.uint8)
    bq = RNG.integers(-3000, 3000, 5).astype(np.int32)
    acc = ref_conv(u.transpose(0, 3, 1, 2), wq.transpose(0, 3, 1, 2), bq, 1, (2, 1), (1, 2), geometry,
                   in_off=-90, w_off=-130, integer=True).transpose(0, 2, 3, 1)     # cpu kernels: x - 90, w - 130
    want = [min(255, max(0, mcs(int(v), 1 << 18, 28) - 4)) for v in acc.reshape(-1)]
    body = (lambda i, o: i + o + shp(1, 7, 6, 4) + S.pack("<i", 5) + CONV_GEOMETRY + S.pack("<5i", 90, 130, 1 << 18,
                                                                                              28, -4)
            + wq.tobytes() + bq.tobytes())
    got = run(f32_model("cpu_quantized_conv2d", body, (1, 7, 6, 4), len(want), out_dtype="u8", in_dtype="u8"), u)[0]
    assert got.tolist() == want

    want = window_ref(nchw.astype(np.float64), (3, 3), (2, 2), ((1, 1), (0, 2)), "max").transpose(0, 2, 3, 1)
    body = (lambda i, o: i + o + S.pack("<I", 2) + shp(1, 7, 6, 4) + S.pack("<4i", 1, 1, 0, 2)
            + S.pack("<6i", 3, 3, 2, 2, 1, 1) + S.pack("<f", -FLT_MAX) + act(*FULL))
    got = run(f32_model("cpu_reduce_window2d", body, (1, 7, 6, 4), want.size), x)[0]
    assert np.array_equal(got, want.astype(np.float32).reshape(-1))


# ---- the KPU ops -------------------------------------------------------------------------------------------------
def layer_words(c_in, h, w, c_out, oh, ow, src, dst, kernel3, pool, pad_value, arg_x, arg_w, arg_add, skips,
                depthwise=False):
    """The 12 u64 words of a KPU layer argument, packed from the spec's table 1.2."""
    words = [0] * 12
    words[0] = int(depthwise) << 3
    words[1] = src | (dst << 32)
    words[2] = (c_in - 1) | ((c_out - 1) << 32) | ((c_out - 1) << 48)
    words[3] = (w - 1) | ((h - 1) << 10) | ((ow - 1) << 32) | ((oh - 1) << 42)
    words[4] = int(kernel3) | (pool << 4) | (1 << 10) | (15 << 16) | (pad_value << 24) | (skips[0] << 32)
    words[5] = 1 | (skips[2] << 32)
    words[7] = (1 << 31) | (skips[1] << 32)
    words[9] = ((arg_w & 0xFFFFFF) << 8) | ((arg_x & 0xFFFFFF) << 32)
    words[10] = arg_add & ((1 << 40) - 1)
    return S.pack("<12Q", *words)


def banker(t, s):
    """nncase's carry shift (spec 1.5.3)."""
    if s == 0:
        return t
    q, f, half = t >> s, t & ((1 << s) - 1), 1 << (s - 1)
    sign = -1 if t < 0 else 1
    return q + sign if f > half or (f == half and q & 1) else q


def ref_kpu(x, w, bn, segs, pad_value, arg_x, arg_w, arg_add, pool):
    """One KPU 3x3 layer on one map, straight from spec 1.5 (integer arg shifts of 0)."""
    c_in, h, wd = x.shape
    c_out = w.shape[0]
    xp = np.pad(x.astype(np.int64), ((0, 0), (1, 1), (1, 1)), constant_values=pad_value)
    y = np.zeros((c_out, h, wd), np.int64)
    for o in range(c_out):
        for r in range(h):
            for c in range(wd):
                acc = 0
                for i in range(c_in):
                    win = xp[i, r:r + 3, c:c + 3]
                    acc += int((win * w[o, i]).sum()) + arg_x * int(win.sum()) + arg_w * int(w[o, i].sum()) + arg_add
                mul, shift, add = bn[o]
                v = ((acc * mul) >> shift) + add
                seg = max(i for i, s in enumerate(segs) if i == 0 or v > s[0])
                x0, ymul, sh, badd = segs[seg]
                y[o, r, c] = min(255, max(0, banker((v - x0) * ymul, sh) + badd))
    return y[:, 0:h // 2 * 2:2, 0:wd // 2 * 2:2] if pool == 5 else y       # left-top of each 2x2 block


def test_kpu_upload_and_batched_kpu_conv_against_spec_arithmetic():
    n, c_in, h, w, c_out = 2, 3, 6, 5, 4
    x = RNG.integers(0, 256, (n, c_in, h, w), dtype=np.uint8)
    wts = RNG.integers(0, 256, (c_out, c_in, 3, 3), dtype=np.uint8)
    bn = [(int(RNG.integers(5, 40)), 12, int(RNG.integers(0, 900))) for _ in range(c_out)]
    segs = [(-(1 << 35), 0, 0, 0), (0, 3, 2, 0), (1500, -5, 3, 200)] + [((1 << 35) - 16 + i, 0, 0, 255)
                                                                        for i in range(13)]
    pad_value, arg_x, arg_w, arg_add = 7, -120, -7, 7 * 120
    oh, ow = h // 2, w // 2
    skips = (0, 8, 16)                                       # the body's padding bytes before bn, act, weights
    in_r = rng_("main", "u8", 0, x.size)
    out_r = rng_("main", "u8", 1024, n * c_out * oh * ow)
    kpu_in = rng_("kpu", "u8", 64 * 100, n * 6 * 64 * c_in)   # W=5: 4 channels per line, one line per row
    upload = in_r + kpu_in + shp(n, c_in, h, w)
    bn_words = b"".join(S.pack("<Q", (m & 0xFFFFFF) | ((a & 0xFFFFFFFF) << 24) | (s << 56)) for m, s, a in bn)
    act_words = b"".join(S.pack("<Q", sh | ((ym & 0xFFFF) << 8) | ((x0 & ((1 << 36) - 1)) << 24)) for x0, ym, sh, _
                         in segs) + bytes(s[3] for s in segs)
    conv = out_r + S.pack("<2i", n, 0) + layer_words(c_in, h, w, c_out, oh, ow, 100, 300, True, 5, pad_value, arg_x,
                                                     arg_w, arg_add, skips) + \
        bytes(skips[0]) + bn_words + bytes(skips[1]) + act_words + bytes(skips[2]) + wts.tobytes()
    data = model([("kpu_upload", upload), ("kpu_conv2d", conv)], 2048, in_r, (n, c_in, h, w), [out_r])
    parsed = emc.load_kmodel(data)
    assert parsed.nodes[1].skips == skips and parsed.nodes[1].body.batches == 2
    got = emc.run_kmodel(parsed, x)[0].reshape(n, c_out, oh, ow)      # a main-memory input: dense NCHW
    for b in range(n):
        want = ref_kpu(x[b], wts, bn, segs, pad_value, arg_x, arg_w, arg_add, 5)
        assert np.array_equal(got[b], want), b
