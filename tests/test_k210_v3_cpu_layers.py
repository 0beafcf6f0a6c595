"""The v3 simulator's CPU layers that no reference file exercises, on small kmodels packed here byte by byte with
the struct module, against plain per-element restatements of the SDK's C loops (spec 2.4)."""
import math
import struct

import numpy as np
import pytest

from emc.errors import EmcError, KModelFormatError
from emc.platforms.k210.kmodel import load_kmodel, run_kmodel

RNG = np.random.default_rng(11)
IN, FC, Q, A, B, OUT, Q0, D0 = 0, 4096, 8192, 12288, 16384, 20480, 24576, 24640      # main-memory addresses
MAIN = 32768


def kmodel(layers, outputs, main=MAIN):
    """A v3 file: header, output table, layer table, bodies (spec 2.1); a callable body gets its file offset."""
    head = struct.pack("<7I", 3, 1, 0, len(layers), 0, main, len(outputs))
    head += b"".join(struct.pack("<2I", a, s) for a, s in outputs)
    offset = len(head) + 8 * len(layers)
    bodies = []
    for _, body in layers:
        bodies.append(body(offset) if callable(body) else body)
        offset += len(bodies[-1])
    head += b"".join(struct.pack("<2I", code, len(body)) for (code, _), body in zip(layers, bodies))
    return head + b"".join(bodies)


def layer_argument(fields):
    """96 bytes from {(word, lsb, width): value}, packed bit by bit (spec 1.2)."""
    words = [0] * 12
    for (word, lsb, width), value in fields.items():
        words[word] |= (value & ((1 << width) - 1)) << lsb
    return b"".join(w.to_bytes(8, "little") for w in words)


def identity_conv(offset):
    """K210_CONV 1x1 on a 1x1x8 map with weight 1, bn x1, activation y = max(v, 0), DMA to main memory at Q0."""
    arg = layer_argument({(1, 0, 15): 0, (1, 32, 15): 1, (3, 0, 10): 7, (3, 32, 10): 7, (4, 10, 1): 1,
                          (4, 16, 8): 15, (5, 0, 1): 1, (5, 15, 17): 1, (7, 0, 15): 1, (7, 16, 4): 1, (7, 28, 3): 4,
                          (7, 31, 1): 1, (8, 0, 15): 1, (8, 16, 4): 1, (8, 20, 3): 4, (11, 16, 16): 7,
                          (11, 32, 32): 7})
    bn = (1).to_bytes(8, "little")
    act = b"".join((((1 if i == 1 else 0) << 8) | ((-(2 ** 35) if i == 0 else 0 if i == 1 else 2 ** 34)
                                                  & (2 ** 36 - 1)) << 24).to_bytes(8, "little") for i in range(16))
    head = struct.pack("<6I", 1, Q0, offset + 24, offset + 120, offset + 128, offset + 136)
    return head + arg + b"\x01" + bytes(7) + bn + act + bytes(16)


def fc(n_in, n_out, src, dst, act=0, weights=None, bias=None):
    w = np.eye(n_out, n_in, dtype="<f4") if weights is None else np.asarray(weights, "<f4")
    b = np.zeros(n_out, "<f4") if bias is None else np.asarray(bias, "<f4")
    return 18, struct.pack("<6I", 0, src, dst, n_in, n_out, act) + w.tobytes() + b.tobytes()


def quantize(src, dst, count, scale=1.0, bias=0.0):
    return 11, struct.pack("<4I2f", 0, src, dst, count, scale, bias)


def program(values, *layers, outputs):
    """A KPU conv first (both loaders need one), DEQUANTIZE of its output with scale 0 -> 0.0, and a
    FULLY_CONNECTED with zero weights whose bias puts the given float values at FC; then the layers under test.
    Returns (kmodel bytes, the zero input image)."""
    values = np.asarray(values, np.float32)
    n = len(values)
    prelude = [(10240, identity_conv), (12, struct.pack("<4I2f", 0, Q0, D0, 1, 0.0, 0.0)),
               fc(1, n, D0, FC, weights=np.zeros((n, 1)), bias=values)]
    return kmodel(prelude + list(layers), outputs), np.zeros((1, 8, 1), np.uint8)


def uint8_program(values, *layers, outputs):
    """program() + QUANTIZE (scale 1) of the integer values 0..255: exact uint8 codes at Q."""
    return program(values, quantize(FC, Q, len(values)), *layers, outputs=outputs)


def carry_shift(v, s):
    """SDK kpu_carry_shift, with its off-by-one for negative odd intermediates."""
    if s <= 0:
        return v
    v >>= s - 1
    if v & 1:
        return (v >> 1) - 1 if v < 0 else (v >> 1) + 1
    return v >> 1


@pytest.mark.parametrize("shifts", [(3, 3, 5), (2, 7, 4), (0, 0, 0)])
@pytest.mark.parametrize("sdk", ["head", "maixemc"])
def test_quantized_add(shifts, sdk):
    n = 21                                           # not a multiple of 8: the SDK processes 24
    a, b = RNG.integers(0, 256, n), RNG.integers(0, 256, n)
    offs = dict(a_off=-100, a_mul=3, b_off=-7, b_mul=-2, o_off=128, o_mul=11)       # results mostly in 0..255
    sa, sb, so = shifts
    body = struct.pack("<5I9i", 0, Q, Q + 32, A, n, offs["a_off"], offs["a_mul"], sa, offs["b_off"], offs["b_mul"], sb,
                       offs["o_off"], offs["o_mul"], so)
    data, x = program(np.concatenate([a, b]), quantize(FC, Q, n), quantize(FC + 4 * n, Q + 32, n), (2, body),
                      outputs=[(A, n)])
    out = run_kmodel(data, x, sdk=sdk)[0]
    expect = []
    for x, y in zip(a.tolist(), b.tolist()):
        xa, yb = (x + offs["a_off"]) * offs["a_mul"], (y + offs["b_off"]) * offs["b_mul"]
        v = (xa + yb) >> sa if sa == sb else (xa >> sa) + (yb >> sb)
        v = v * offs["o_mul"]
        v = (carry_shift(v, so) if sdk == "head" else v >> so) + offs["o_off"]
        expect.append(min(255, max(0, v)))
    assert out.dtype == np.float32 and out.tolist() == expect           # uint8 output returned as float32 values


def test_requantize_and_the_forks_short_loop():
    n = 1000
    values = RNG.integers(0, 256, n)
    table = RNG.permutation(256).astype(np.uint8)
    data, x = uint8_program(values, (13, struct.pack("<4I", 0, Q, A, n) + table.tobytes()), outputs=[(A, n)])
    assert run_kmodel(data, x)[0].tolist() == table[values].tolist()
    fork = run_kmodel(data, x, sdk="maixemc")[0]      # a33de35 / Maix-EMC: 8 * ceil(ceil(1000 / 8) / 8) = 128
    assert fork[:128].tolist() == table[values[:128]].tolist() and not fork[128:].any()


def test_quantize_rounding_of_each_sdk():
    values = [2.5, 3.5, -0.4, 254.5, 300.0, np.nan, np.inf, -np.inf, 1.49999]
    data, x = program(values, quantize(FC, A, 9), outputs=[(A, 9)])
    assert run_kmodel(data, x)[0].tolist() == [3, 4, 0, 255, 255, 255, 255, 0, 1]              # roundf
    assert run_kmodel(data, x, sdk="maixemc")[0].tolist() == [2, 3, 0, 254, 255, 255, 255, 0, 1]  # truncation


def pool_body(code, c, h, w, oh, ow, k, s, p, act=None):
    shape = struct.pack("<3I", w, h, c) + struct.pack("<3I", ow, oh, c)
    geometry = struct.pack("<6I", k[1], k[0], s[1], s[0], p[1], p[0])
    body = struct.pack("<3I", 0, Q if code == 8 else FC, A) + shape + geometry
    return code, body + (struct.pack("<I", act) if act is not None else b"")


def sdk_pool(x, oh, ow, k, s, p, reduce):
    """The SDK's pool loops: window origin o*s - p, samples outside the map skipped."""
    c, h, w = x.shape
    out = np.zeros((c, oh, ow), object)
    for ch in range(c):
        for oy in range(oh):
            for ox in range(ow):
                y0, x0 = oy * s[0] - p[0], ox * s[1] - p[1]
                window = [x[ch, y, xx] for y in range(max(0, y0), min(h, y0 + k[0]))
                          for xx in range(max(0, x0), min(w, x0 + k[1]))]
                out[ch, oy, ox] = reduce(window)
    return out


@pytest.mark.parametrize("geometry", [((3, 3), (2, 2), (1, 1), 4, 5), ((2, 3), (1, 2), (0, 1), 6, 4),
                                      ((1, 1), (1, 1), (1, 1), 9, 9), ((5, 5), (3, 3), (2, 2), 3, 3)])
def test_max_and_average_pools(geometry):
    k, s, p, oh, ow = geometry
    c, h, w = 3, 7, 8
    values = RNG.integers(0, 256, c * h * w)
    data, x = uint8_program(values, pool_body(8, c, h, w, oh, ow, k, s, p), outputs=[(A, c * oh * ow)])
    got = run_kmodel(data, x)[0]
    expect = sdk_pool(values.reshape(c, h, w), oh, ow, k, s, p, lambda win: max([0] + win))
    assert got.tolist() == expect.reshape(-1).tolist()
    floats = RNG.normal(0, 3, c * h * w).astype(np.float32)
    data, x = program(floats, pool_body(9, c, h, w, oh, ow, k, s, p, act=1), outputs=[(A, 4 * c * oh * ow)])
    got = run_kmodel(data, x)[0]

    def mean(win):                                   # float32 running sum in window order, / float count
        total = np.float32(0)
        for v in win:
            total = np.float32(total + v)
        return np.float32(total / np.float32(len(win))) if win else np.float32("nan")
    expect = sdk_pool(floats.reshape(c, h, w), oh, ow, k, s, p, mean).reshape(-1).astype(np.float32)
    np.testing.assert_array_equal(got, expect)      # bit for bit; `act` is ignored by the SDK


def test_global_average_pools_float_and_quantized():
    c, ks = 5, 13
    values = RNG.integers(0, 256, c * ks)
    data, x = uint8_program(values, (6, struct.pack("<5I", 0, Q, A, ks, c)), outputs=[(A, c)])
    assert run_kmodel(data, x)[0].tolist() == [sum(r) // ks for r in values.reshape(c, ks).tolist()]
    floats = RNG.normal(0, 10, c * ks).astype(np.float32)
    data, x = program(floats, (5, struct.pack("<5I", 0, FC, A, ks, c)), outputs=[(A, 4 * c)])
    expect = []
    for row in floats.reshape(c, ks):
        total = np.float32(0)
        for v in row:
            total = np.float32(total + v)
        expect.append(np.float32(total / np.float32(ks)))
    np.testing.assert_array_equal(run_kmodel(data, x)[0], np.array(expect, np.float32))


def test_concat_flatten_and_resize():
    c, h, w = 3, 4, 5
    values = RNG.integers(0, 256, c * h * w)
    concat = (17, struct.pack("<3I", 0, B, 3) + struct.pack("<6I", Q + 10, 7, Q, 10, Q + 40, 20))
    flatten = (21, struct.pack("<6I", 0, Q, A, w, h, c))
    resize = (23, struct.pack("<9I", 0, Q, OUT, w, h, c, 7, 3, 0))
    data, x = uint8_program(values, concat, flatten, resize, outputs=[(B, 37), (A, c * h * w), (OUT, c * 3 * 7)])
    joined, flat, resized = run_kmodel(data, x)
    assert joined.tolist() == values[10:17].tolist() + values[:10].tolist() + values[40:60].tolist()
    m = values.reshape(c, h, w)
    assert flat.tolist() == [m[ch, y, xx] for y in range(h) for xx in range(w) for ch in range(c)]
    sh, sw = np.float32(h) / np.float32(3), np.float32(w) / np.float32(7)
    rows = [min(math.floor(np.float32(oy) * sh), h - 1) for oy in range(3)]
    cols = [min(math.floor(np.float32(ox) * sw), w - 1) for ox in range(7)]
    assert resized.tolist() == [m[ch, y, xx] for ch in range(c) for y in rows for xx in cols]


def test_float_layers_add_l2_softmax_logistic():
    n = 6
    v = RNG.normal(0, 2, 2 * n).astype(np.float32)
    data, x = program(v, (1, struct.pack("<5I", 0, FC, FC + 4 * n, A, n)), (14, struct.pack("<4I", 0, FC, B, n)),
                      (15, struct.pack("<4I", 0, FC, OUT, n)), (25, struct.pack("<4I", 0, FC, OUT + 64, n)),
                      outputs=[(A, 4 * n), (B, 4 * n), (OUT, 4 * n), (OUT + 64, 4 * n)])
    added, l2, soft, logistic = run_kmodel(data, x)
    a = v[:n].astype(np.float64)
    np.testing.assert_array_equal(added, (v[:n] + v[n:]))
    np.testing.assert_allclose(l2, a / np.sqrt((a * a).sum()), rtol=2e-6)
    e = np.exp(a - max(a.max(), 1.17549435e-38))
    np.testing.assert_allclose(soft, e / e.sum(), rtol=2e-6)
    np.testing.assert_allclose(logistic, 1 / (1 + np.exp(-a)), rtol=2e-6)


def test_fully_connected_activations_and_fma_accumulation():
    n_in, n_out = 300, 16
    w = RNG.normal(0, 1, (n_out, n_in)).astype(np.float32)
    bias = RNG.normal(0, 1, n_out).astype(np.float32)
    x = RNG.normal(0, 4, n_in).astype(np.float32)
    acc = np.zeros(n_out, np.float32)                # one rounding per step: product + sum formed exactly
    plain = np.zeros(n_out, np.float32)              # two roundings per step (no FMA)
    for i in range(n_in):
        acc = (acc.astype(np.float64) + x[i].astype(np.float64) * w[:, i].astype(np.float64)).astype(np.float32)
        plain = (plain + x[i] * w[:, i]).astype(np.float32)
    assert not np.array_equal(acc, plain)            # the data tells the two apart
    linear = (acc + bias).astype(np.float32)
    for act, sdk, expect in [(0, "head", linear), (1, "head", np.maximum(linear, 0)),
                             (2, "head", np.clip(linear, 0, 6)), (1, "maixemc", np.maximum(linear, 0)),
                             (2, "maixemc", linear)]:                   # the fork has no relu6: linear
        data, image = program(x, fc(n_in, n_out, FC, A, act, w, bias), outputs=[(A, 4 * n_out)])
        np.testing.assert_array_equal(run_kmodel(data, image, sdk=sdk)[0], expect)
    with pytest.raises(EmcError, match="starts a model only at K210_CONV"):
        run_kmodel(kmodel([fc(n_in, 4, IN, A)], [(A, 16)]), x, sdk="maixemc")


def test_fma_accumulation_of_a_batch_steps_each_sample_alone():
    """dot_fma over a batch (as the lockstep FULLY_CONNECTED runs it) rounds each sample's sum as its own loop."""
    from emc.platforms.k210.chip.cpu_math import dot_fma
    w = RNG.normal(0, 1, (7, 200)).astype(np.float32)
    xs = RNG.normal(0, 4, (3, 200)).astype(np.float32)
    got = dot_fma(xs, w)
    assert got.shape == (3, 7) and got.dtype == np.float32
    for x, row in zip(xs, got):
        acc = [np.float32(0)] * 7
        for i in range(200):
            acc = [np.float32(float(a) + float(x[i]) * float(w[o, i])) for o, a in enumerate(acc)]
        np.testing.assert_array_equal(row, acc)


def test_bad_programs_raise_emc_errors():
    outside = program(np.zeros(4), fc(4, 4, FC, MAIN - 8), outputs=[(0, 16)])     # 16 bytes 8 before the end
    with pytest.raises(KModelFormatError, match="main memory"):
        run_kmodel(*outside)
    bad_shift = (2, struct.pack("<5I9i", 0, Q, Q, A, 4, 0, 1, 70, 0, 1, 70, 0, 1, 0))
    with pytest.raises(KModelFormatError, match="shift 70"):
        run_kmodel(*uint8_program(np.zeros(4), bad_shift, outputs=[(A, 4)]))
    huge_kernel = pool_body(8, 1, 2, 2, 1, 1, (100, 100), (1, 1), (0, 0))
    with pytest.raises(KModelFormatError, match="kernel_height"):
        run_kmodel(*uint8_program(np.zeros(4), huge_kernel, outputs=[(A, 1)]))
    nncase_only = (7, pool_body(9, 1, 2, 2, 1, 1, (2, 2), (1, 1), (0, 0), 0)[1])
    data, x = program(np.zeros(4), nncase_only, outputs=[(A, 4)])
    with pytest.raises(EmcError, match="MAX_POOL2D"):                 # nncase-only body: no loader runs it
        run_kmodel(data, x)
    assert load_kmodel(data).layers[3].name == "MAX_POOL2D"
    short_dma = bytearray(program(np.zeros(1), outputs=[(Q0, 8)])[0])
    word11 = 28 + 8 + 8 * 3 + 24 + 8 * 11                   # first body, its layer argument, word 11
    short_dma[word11 + 4:word11 + 8] = (5).to_bytes(4, "little")         # dma_total_byte: 6 bytes, the map has 8
    with pytest.raises(KModelFormatError, match="dma_total_byte"):
        run_kmodel(bytes(short_dma), x)


def test_the_kpu_prelude_streams_its_output_to_main_memory():
    data, x = program(np.zeros(1), outputs=[(Q0, 8)])
    image = np.arange(8, dtype=np.uint8).reshape(1, 8, 1) * 30
    outs, trace = run_kmodel(data, image, trace=True)
    assert outs[0].tolist() == list(range(0, 240, 30)) and trace[0][2].shape == (1, 1, 8)


def test_a_concat_of_a_few_large_inputs_loads_and_runs():
    """A concat's input sizes are sizes, not one shape: four 756-byte parts (emc wrote such a file) load and join,
    although 756^4 would exceed any tensor of the K210."""
    values = RNG.integers(0, 256, 756)
    parts = struct.pack("<8I", *[v for _ in range(4) for v in (Q, 756)])
    concat = (17, struct.pack("<3I", 0, B, 4) + parts)
    data, x = uint8_program(values, concat, outputs=[(B, 4 * 756)])
    joined, = run_kmodel(data, x)
    assert joined.tolist() == values.tolist() * 4


def test_a_concat_part_larger_than_the_chip_is_refused():
    values = RNG.integers(0, 256, 8)
    concat = (17, struct.pack("<3I", 0, B, 2) + struct.pack("<4I", Q, 8, Q, 9 << 20))
    data, _ = uint8_program(values, concat, outputs=[(B, 8)])
    with pytest.raises(KModelFormatError, match=r"input sizes \(8, 9437184\) spans more than 8,388,608"):
        load_kmodel(data)
