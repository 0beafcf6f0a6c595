"""The KPU model against a plain, slow re-statement of the spec's formulas written here in pure Python."""
import numpy as np
import pytest

from emc.platforms.k210.kpu import (ActTable, LayerArgument, decode_bn_table, encode_bn_table, kpu_conv,
                                    kpu_download, kpu_layout, kpu_rows, kpu_upload)

RNG = np.random.default_rng(3)


def ref_round_shift(t, s):
    """Spec 1.5.3 carry shift, one integer at a time."""
    if s == 0:
        return t
    q = t >> s
    f = t & ((1 << s) - 1)
    half = 1 << (s - 1)
    sgn = -1 if t < 0 else 1
    if f > half or (f == half and q % 2 == 1):
        return q + sgn
    return q


def ref_pool(y, pool):
    c, h, w = len(y), len(y[0]), len(y[0][0])
    if pool == 0:
        return y
    if pool in (1, 2, 3, 4):
        s = 2 if pool in (1, 2) else 4
        out = []
        for ch in y:
            rows = []
            for oy in range(h // s):
                vals = []
                for ox in range(w // s):
                    win = [ch[oy * s + i][ox * s + j] for i in range(s) for j in range(s)]
                    vals.append(max(win) if pool in (1, 3) else sum(win) // (s * s))
                rows.append(vals)
            out.append(rows)
        return out
    if pool in (5, 7):
        s = 2 if pool == 5 else 4
        return [[[ch[oy * s][ox * s] for ox in range(w // s)] for oy in range(h // s)] for ch in y]
    if pool == 6:
        return [[[ch[oy * 2][ox * 2 + 1] if ox * 2 + 1 < w else 0 for ox in range(w // 2)] for oy in range(h // 2)]
                for ch in y]
    if pool == 8:
        g = lambda ch, yy, xx: ch[min(yy, h - 1)][min(xx, w - 1)]
        return [[[(g(ch, oy, ox) + g(ch, oy + 1, ox) + g(ch, oy, ox + 1) + g(ch, oy + 1, ox + 1)) // 4
                  for ox in range(w)] for oy in range(h)] for ch in y]
    if pool == 9:
        return [[[max(ch[yy][xx] for yy in (oy, oy + 1) for xx in (ox, ox + 1) if yy < h and xx < w)
                  for ox in range(w)] for oy in range(h)] for ch in y]
    raise AssertionError(pool)


def ref_layer(arg, x, w, bn, act, per_channel=True):
    c_in, h, wd = arg.in_shape
    c_out = arg.out_shape[0]
    k = arg.kernel
    pad = k // 2
    mul, shift, add = bn

    def px(i, yy, xx):
        if 0 <= yy < h and 0 <= xx < wd:
            return int(x[i][yy][xx])
        return arg.pad_value

    out = []
    for o in range(c_out):
        chans = [o] if arg.depthwise else range(c_in)
        plane = []
        for yy in range(h):
            row = []
            for xx in range(wd):
                acc = 0
                sx_all, sw_all = 0, 0
                for i in chans:
                    p = sx = sw = 0
                    for ky in range(k):
                        for kx in range(k):
                            wv = int(w[o][ky][kx]) if arg.depthwise else int(w[o][i][ky][kx])
                            xv = px(i, yy + ky - pad, xx + kx - pad)
                            p += xv * wv
                            sx += xv
                            sw += wv
                    if per_channel:
                        acc += p + ((arg.arg_x * sx) >> arg.shr_x) + ((arg.arg_w * sw) >> arg.shr_w) + arg.arg_add
                    else:
                        acc += p
                        sx_all += sx
                        sw_all += sw
                if not per_channel:
                    acc += ((arg.arg_x * sx_all) >> arg.shr_x) + ((arg.arg_w * sw_all) >> arg.shr_w) \
                        + arg.arg_add * len(chans)
                v = ((acc * int(mul[o])) >> int(shift[o])) + int(add[o])
                seg = 0
                for s in range(16):
                    if v > int(act.x_start[s]):
                        seg = s
                t = (v - int(act.x_start[seg])) * int(act.y_mul[seg])
                r = ref_round_shift(t, int(act.shift[seg])) + int(act.add[seg])
                row.append(min(max(r, 0), 255))
            plane.append(row)
        out.append(plane)
    return np.array(ref_pool(out, arg.pool_type), np.uint8)


def random_layer(depthwise, kernel, pool, c_in=3, c_out=4, h=8, w=8):
    c_out = c_in if depthwise else c_out
    arg = LayerArgument(i_ch_num=c_in - 1, o_ch_num=c_out - 1, i_row_wid=w - 1, i_col_high=h - 1,
                        kernel_type=1 if kernel == 3 else 0, pool_type=pool, depth_wise_layer=int(depthwise),
                        pad_value=int(RNG.integers(0, 256)), arg_x=int(RNG.integers(-2 ** 22, 2 ** 22)),
                        shr_x=int(RNG.integers(0, 16)), arg_w=int(RNG.integers(-2 ** 20, 2 ** 20)),
                        shr_w=int(RNG.integers(0, 16)), arg_add=int(RNG.integers(-2 ** 20, 2 ** 20)))
    wshape = (c_out, kernel, kernel) if depthwise else (c_out, c_in, kernel, kernel)
    weights = RNG.integers(0, 256, wshape).astype(np.uint8)
    bn = (RNG.integers(-2 ** 15, 2 ** 15, c_out), RNG.integers(8, 16, c_out), RNG.integers(-2 ** 12, 2 ** 12, c_out))
    starts = np.sort(RNG.integers(-2 ** 14, 2 ** 14, 16))
    starts[0] = -2 ** 35
    act = ActTable(starts, RNG.integers(-2 ** 15, 2 ** 15, 16), RNG.integers(0, 21, 16), RNG.integers(0, 256, 16))
    x = RNG.integers(0, 256, (c_in, h, w)).astype(np.uint8)
    return arg, x, weights, bn, act


@pytest.mark.parametrize("depthwise,kernel", [(False, 3), (False, 1), (True, 3), (True, 1)])
@pytest.mark.parametrize("mode", ["per_channel", "sum"])
def test_conv_matches_reference(depthwise, kernel, mode):
    arg, x, w, bn, act = random_layer(depthwise, kernel, 0)
    got = kpu_conv(arg, x, w, bn, act, arg_x_mode=mode)
    np.testing.assert_array_equal(got, ref_layer(arg, x, w, bn, act, per_channel=(mode == "per_channel")))


@pytest.mark.parametrize("pool", range(10))
def test_every_pool_type(pool):
    arg, x, w, bn, act = random_layer(False, 3, pool, h=8, w=9)
    np.testing.assert_array_equal(kpu_conv(arg, x, w, bn, act), ref_layer(arg, x, w, bn, act))


def test_arg_x_grouping_matters_for_fractional_args():
    arg, x, w, bn, act = random_layer(False, 3, 0, c_in=6)
    arg.arg_x, arg.shr_x = -3909031, 15          # a Maix-EMC-like fractional weight offset
    arg.arg_w = arg.arg_add = arg.pad_value = 0
    x = RNG.integers(0, 3, x.shape).astype(np.uint8)
    w = np.zeros_like(w)
    bn = (np.ones(4, np.int64), np.zeros(4, np.int64), np.zeros(4, np.int64))
    act = ActTable([-2 ** 35, -6600] + [2 ** 34] * 14, [0, 1] + [0] * 14, [0] * 16, [0] * 16)
    per_channel = kpu_conv(arg, x, w, bn, act, "per_channel")
    total = kpu_conv(arg, x, w, bn, act, "sum")
    assert np.array_equal(per_channel, ref_layer(arg, x, w, bn, act, True))
    assert np.array_equal(total, ref_layer(arg, x, w, bn, act, False))
    assert not np.array_equal(per_channel, total)


@pytest.mark.parametrize("c,h,w", [(5, 7, 3), (3, 4, 17), (2, 3, 33), (1, 2, 130), (3, 5, 64)])
def test_ram_layout_round_trip_and_formula(c, h, w):
    ram = np.zeros(2 * 1024 * 1024, np.uint8)
    x = RNG.integers(0, 256, (c, h, w)).astype(np.uint8)
    kpu_upload(ram, 10, x)
    np.testing.assert_array_equal(kpu_download(ram, 10, c, h, w), x)
    g, p, row_len = kpu_layout(w)
    ci, yi, xi = c - 1, h - 1, w - 1            # spot-check the spec's address formula for the last pixel
    assert ram[640 + (ci // g) * row_len * h * 64 + (ci % g) * p + yi * row_len * 64 + xi] == x[ci, yi, xi]
    assert kpu_rows(w, h, c) == row_len * h * -(-c // g)
    if w % 64 == 0:                            # W a multiple of 64: the layout is dense CHW
        np.testing.assert_array_equal(ram[640:640 + x.size], x.reshape(-1))


def test_tables_encode_decode():
    arg, x, w, bn, act = random_layer(False, 3, 1)
    arg2 = LayerArgument.from_bytes(arg.to_bytes())
    assert arg2.as_dict() == arg.as_dict()
    mul, shift, add = decode_bn_table(encode_bn_table(*bn), 4)
    assert np.array_equal(mul, bn[0]) and np.array_equal(shift, bn[1]) and np.array_equal(add, bn[2])
    act2 = ActTable.from_bytes(act.to_bytes())
    for field in ("x_start", "y_mul", "shift", "add"):
        assert np.array_equal(getattr(act2, field), getattr(act, field))
