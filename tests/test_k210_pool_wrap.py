"""kpu.c's QUANTIZED_MAX_POOL2D wrap: a window that starts 2+ pixels past the map's edge reads the next row /
channel (the SDK computes the window's end in uint32). The simulator follows kpu.c on a crafted file; emc's own
v3 lowering of a trailing padding of 2+ never depends on it."""
import struct

import numpy as np

import emc
from emc import layers as L
from emc.graph import Graph
from emc.platforms.k210.kmodel import load_kmodel, run_kmodel
from test_k210_v3_cpu_layers import OUT, Q, uint8_program

RNG = np.random.default_rng(23)


def kpu_c_max_pool(mem, src, in_chw, out_chw, kernel, strides, pads):
    """A literal restatement of kpu.c's kpu_quantized_max_pool2d, with C's uint32 / int32 conversions."""
    ci, hi, wi = in_chw
    co, ho, wo = out_chw
    out = []
    u32 = lambda v: v & 0xFFFFFFFF                                                          # noqa: E731
    i32 = lambda v: u32(v) - (1 << 32) if u32(v) >= 1 << 31 else u32(v)                     # noqa: E731
    for oc in range(co):
        channel = src + wi * hi * oc
        for oy in range(ho):
            for ox in range(wo):
                x0 = i32(u32(ox * strides[1]) - pads[1])
                y0 = i32(u32(oy * strides[0]) - pads[0])
                xs, ys = max(0, -x0), max(0, -y0)
                xe = i32(min(kernel[1], u32(wi - x0)))            # uint32 comparison: wraps past the edge
                ye = i32(min(kernel[0], u32(hi - y0)))
                value = 0
                for ky in range(ys, ye):
                    for kx in range(xs, xe):
                        value = max(value, mem[channel + u32((y0 + ky) * wi + (x0 + kx))])
                out.append(value)
    return np.array(out, np.uint8)


def max_pool_layer(src, dst, in_chw, out_chw, kernel, strides, pads):
    c, h, w = in_chw
    oc, oh, ow = out_chw
    return 8, struct.pack("<15I", 0, src, dst, w, h, c, ow, oh, oc, kernel[1], kernel[0], strides[1], strides[0],
                          pads[1], pads[0])


def test_simulator_wraps_as_kpu_c():
    """2 channels of 3x3 padded to 6x6 in one 1x1 pool: windows at x, y = 4, 5 wrap; channel 1 reads past the
    tensor into the bytes that follow it in main memory (here defined codes 200..)."""
    codes = RNG.integers(1, 100, 18).tolist() + list(range(200, 230))
    in_chw, out_chw = (2, 3, 3), (2, 6, 6)
    layer = max_pool_layer(Q, OUT, in_chw, out_chw, (1, 1), (1, 1), (0, 0))
    data, image = uint8_program(codes, layer, outputs=[(OUT, 72)])
    model = load_kmodel(data)
    got = run_kmodel(model, image)[0].astype(np.uint8)
    mem = {Q + i: v for i, v in enumerate(codes)}
    want = kpu_c_max_pool(mem, Q, in_chw, out_chw, (1, 1), (1, 1), (0, 0))
    np.testing.assert_array_equal(got, want)
    unwrapped = np.zeros((2, 6, 6), np.uint8)                       # what "out of map = nothing" would give
    unwrapped[:, :3, :3] = np.array(codes[:18]).reshape(2, 3, 3)
    assert np.any(got.reshape(2, 6, 6) != unwrapped)                 # the wrap really changes the result
    assert got.reshape(2, 6, 6)[1, 5, 5] >= 200                      # ... and reads past the tensor
    notes = model.warnings()
    assert len(notes) == 1 and "layer 4 (QUANTIZED_MAX_POOL2D)" in notes[0] and "past" in notes[0]
    assert "wrap" not in str(load_kmodel(uint8_program(codes, max_pool_layer(
        Q, OUT, in_chw, (2, 4, 4), (1, 1), (1, 1), (0, 0)), outputs=[(OUT, 32)])[0])).lower()


def test_trailing_padding_never_wraps():
    """ZeroPadding of 3 below and 2 right, as emc lowers it for v3: no emitted window wraps, and the file's result
    equals the float model within quantisation."""
    g = Graph()
    i = g.add_input((6, 6, 3))
    c = g.add(L.Conv2D(RNG.normal(size=(3, 3, 3, 8)).astype(np.float32), np.full(8, 0.5, np.float32),
                       pads=(1, 1, 1, 1), activation=L.activations.Act("relu")), i)
    p = g.add(L.Pad2D((1, 3, 0, 2)), c)
    g.set_outputs(g.add(L.Conv2D(RNG.normal(size=(1, 1, 8, 4)).astype(np.float32), None), p))
    x = RNG.uniform(0, 1, (8, 6, 6, 3)).astype(np.float32)
    art = emc.convert(g, platform="k210", dataset=x, version=3)
    model = load_kmodel(art.files[next(iter(art.files))])
    pools = [layer for layer in model.layers if layer.name == "QUANTIZED_MAX_POOL2D"]
    assert len(pools) == 3 and model.warnings() == []              # one trailing row / column per pass
    want, got = g.run(x)[0], art.simulate(x)[0]
    assert want.shape == got.shape == (8, 10, 8, 4)
    cos = float(np.sum(want * got) / np.linalg.norm(want) / np.linalg.norm(got))
    assert cos > 0.995
    np.testing.assert_allclose(got[:, 7:, :, :], got[:, 7:8, :1, :].repeat(3, 1).repeat(8, 2))   # padded rows
