"""The KPU model against a plain, slow re-statement of the spec's formulas written here in pure Python."""
import numpy as np
import pytest

import emc.platforms.k210.chip.kpu as kpu
from emc.errors import KModelFormatError
from emc.platforms.k210.chip.kpu import (ActTable, LayerArgument, decode_act_table, decode_bn_table, encode_act_table,
                                    encode_bn_table, kpu_conv, kpu_download, kpu_layout, kpu_rows, kpu_upload)

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


POOL_STRIDE = {0: 1, 1: 2, 2: 2, 3: 4, 4: 4, 5: 2, 6: 2, 7: 4, 8: 1, 9: 1}     # spec 1.5.5 table


def random_layer(depthwise, kernel, pool, c_in=3, c_out=4, h=8, w=8):
    c_out = c_in if depthwise else c_out
    s = POOL_STRIDE[pool]
    arg = LayerArgument(i_ch_num=c_in - 1, o_ch_num=c_out - 1, i_row_wid=w - 1, i_col_high=h - 1,
                        o_row_wid=w // s - 1, o_col_high=h // s - 1,
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


@pytest.mark.parametrize("kernel", [3, 1])
def test_whole_arg_x_ratios_shift_the_channel_total_once(kernel):
    """arg_x / 2^shr_x an integer (emc's and nncase's files): the chip's per-channel shifts, summed, equal the one
    shift of the channel total that kpu_conv then takes (checked on the x term itself: outputs saturate)."""
    arg, x, w, _, _ = random_layer(False, kernel, 0, c_in=6, c_out=5)
    arg.shr_x, arg.arg_x = 5, -32 * int(RNG.integers(1, 2 ** 12))
    pad = kernel // 2
    xp = np.pad(RNG.integers(0, 256, (2, 6, 8, 8)), ((0, 0), (0, 0), (pad, pad), (pad, pad)),
                constant_values=arg.pad_value).astype(np.uint8)
    x_term, _ = kpu._offset_terms(arg, xp, w.reshape(5, -1).astype(np.int64), 6, 8, 8, "per_channel")
    for n in range(2):
        for yy in range(8):
            for xx in range(8):
                want = sum((arg.arg_x * int(xp[n, i, yy:yy + kernel, xx:xx + kernel].sum())) >> arg.shr_x
                           for i in range(6))
                assert x_term[n, 0, yy, xx] == want


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


def ref_layout(w):
    """Spec 1.1 table: (channels per line group, row pitch, lines per row)."""
    return (4, 16, 1) if w <= 16 else (2, 32, 1) if w <= 32 else (1, 64, (w + 63) // 64)


def ref_upload(ram, line, x):
    """The SDK's kpu_upload_core, one pixel at a time."""
    c, h, w = x.shape
    g, p, row_len = ref_layout(w)
    for ch in range(c):
        origin = line * 64 + ch // g * row_len * h * 64 + ch % g * p
        for y in range(h):
            for xx in range(w):
                ram[origin + y * row_len * 64 + xx] = x[ch, y, xx]


@pytest.mark.parametrize("c,h,w", [(5, 7, 3), (3, 4, 17), (2, 3, 33), (1, 2, 130), (3, 5, 64), (9, 2, 16)])
def test_ram_layout_matches_the_sdk_upload_and_round_trips(c, h, w):
    ram = np.zeros(2 * 1024 * 1024, np.uint8)
    expected = np.zeros_like(ram)
    x = RNG.integers(1, 256, (c, h, w)).astype(np.uint8)
    kpu_upload(ram, 10, x)
    ref_upload(expected, 10, x)
    np.testing.assert_array_equal(ram, expected)
    np.testing.assert_array_equal(kpu_download(ram, 10, c, h, w), x)
    g, _, row_len = ref_layout(w)
    assert kpu_layout(w) == ref_layout(w)
    assert kpu_rows(w, h, c) == row_len * h * -(-c // g)
    assert np.count_nonzero(ram[640 + 64 * kpu_rows(w, h, c):]) == 0        # nothing written past the map
    if w % 64 == 0:                            # W a multiple of 64: the layout is dense CHW
        np.testing.assert_array_equal(ram[640:640 + x.size], x.reshape(-1))


def test_batched_maps_are_consecutive_and_overflow_is_an_error():
    ram = np.zeros(2 * 1024 * 1024, np.uint8)
    x = RNG.integers(0, 256, (3, 2, 5, 20)).astype(np.uint8)
    kpu_upload(ram, 7, x)
    rows = kpu_rows(20, 5, 2)
    for n in range(3):
        np.testing.assert_array_equal(kpu_download(ram, 7 + n * rows, 2, 5, 20), x[n])
    np.testing.assert_array_equal(kpu_download(ram, 7, 2, 5, 20, batches=3), x)
    with pytest.raises(KModelFormatError, match="KPU RAM"):
        kpu_upload(ram, 32767, x[0])
    with pytest.raises(KModelFormatError, match="KPU RAM"):
        kpu_download(ram, 32760, 64, 64, 64)


def words_of(fields):
    """12 u64 words built bit by bit from {(word, lsb, width): value} -- independent of the encoder."""
    words = [0] * 12
    for (word, lsb, width), value in fields.items():
        words[word] |= (value & ((1 << width) - 1)) << lsb
    return b"".join(w.to_bytes(8, "little") for w in words)


def test_layer_argument_fields_and_sign_extension():
    raw = words_of({(0, 3, 1): 1, (1, 0, 15): 12345, (1, 32, 15): 32767, (2, 0, 10): 1023, (2, 32, 10): 1023,
                    (2, 48, 10): 340, (3, 0, 10): 223, (3, 10, 9): 511, (3, 32, 10): 111, (3, 42, 9): 255,
                    (4, 0, 3): 1, (4, 4, 4): 5, (4, 24, 8): 185, (5, 1, 6): 12, (5, 15, 17): 63744,
                    (9, 0, 4): 14, (9, 4, 4): 15, (9, 8, 24): -7227311, (9, 32, 24): -3906599,
                    (10, 0, 40): -(2 ** 39), (11, 0, 1): 1, (11, 16, 16): 65535, (11, 32, 32): 2 ** 32 - 1,
                    (0, 40, 8): 0xAB, (10, 50, 8): 0xCD})         # reserved bits must survive encode(decode)
    arg = LayerArgument.from_bytes(raw)
    assert (arg.depth_wise_layer, arg.image_src_addr, arg.image_dst_addr, arg.o_ch_num_coef) == (1, 12345, 32767, 340)
    assert arg.in_shape == (1024, 512, 224) and arg.out_shape == (1024, 256, 112)
    assert (arg.kernel_type, arg.kernel, arg.pool_type, arg.pad_value, arg.load_time, arg.para_size) == \
        (1, 3, 5, 185, 12, 63744)
    assert (arg.shr_w, arg.shr_x, arg.arg_w, arg.arg_x, arg.arg_add) == (14, 15, -7227311, -3906599, -(2 ** 39))
    assert (arg.send_data_out, arg.channel_byte_num, arg.dma_total_byte) == (1, 65535, 2 ** 32 - 1)
    assert arg.to_bytes() == raw
    arg.arg_x, arg.pool_type = 5, 0
    again = LayerArgument.from_bytes(arg.to_bytes())
    assert (again.arg_x, again.pool_type, again.arg_w, again.words[0] >> 40 & 0xFF) == (5, 0, -7227311, 0xAB)


def test_tables_decode_from_hand_built_words_and_encode_back():
    mul, add, shift = [-5, 2 ** 23 - 1, -(2 ** 23)], [-(2 ** 31), 7, 2 ** 31 - 1], [0, 15, 9]
    words = [((m & 0xFFFFFF) | ((a & 0xFFFFFFFF) << 24) | (s << 56)).to_bytes(8, "little")
             for m, a, s in zip(mul, add, shift)]
    bn = decode_bn_table(b"".join(words), 3)
    assert [v.tolist() for v in bn] == [mul, shift, add]
    assert encode_bn_table(*bn) == b"".join(words)
    segs = [(-(2 ** 35), 0, 0, 0)] + [(-1000 + 97 * i, (-1) ** i * (300 + i), 3 + i, 10 * i) for i in range(1, 16)]
    raw = b"".join(((s & 0xFF) | ((y & 0xFFFF) << 8) | ((x & (2 ** 36 - 1)) << 24) | (0xC << 60)).to_bytes(8, "little")
                   for x, y, s, _ in segs) + bytes(a for *_, a in segs)
    table = decode_act_table(raw)            # bits 60..63 (MSVC garbage in some v4 files) are masked off
    assert table.segments() == segs
    clean = bytearray(raw)
    for i in range(16):
        clean[8 * i + 7] &= 0x0F
    assert encode_act_table(table) == bytes(clean) and encode_act_table(tuple(zip(*segs))) == bytes(clean)
    with pytest.raises(KModelFormatError, match="act_table"):
        decode_act_table(raw[:100])
    with pytest.raises(KModelFormatError, match="bn_table"):
        decode_bn_table(raw, 100)


def test_sixteen_bit_weights_and_unsorted_activation_tables():
    arg, x, w, bn, act = random_layer(False, 3, 0)
    w16 = RNG.integers(0, 65536, w.shape).astype(np.uint16)
    np.testing.assert_array_equal(kpu_conv(arg, x, w16, bn, act), ref_layer(arg, x, w16, bn, act))
    shuffled = ActTable(np.concatenate([[-2 ** 35], RNG.integers(-2 ** 14, 2 ** 14, 15)]), act.y_mul, act.shift,
                        act.add)
    np.testing.assert_array_equal(kpu_conv(arg, x, w, bn, shuffled), ref_layer(arg, x, w, bn, shuffled))


@pytest.mark.parametrize("depthwise,kernel,pool", [(False, 3, 1), (True, 3, 0), (False, 1, 9)])
def test_row_bands_give_the_same_result(monkeypatch, depthwise, kernel, pool):
    arg, x, w, bn, act = random_layer(depthwise, kernel, pool, c_in=5, c_out=6, h=12, w=20)
    whole = kpu_conv(arg, x, w, bn, act)
    monkeypatch.setattr(kpu, "BAND_ELEMENTS", 1)          # one output row per band
    np.testing.assert_array_equal(kpu_conv(arg, x, w, bn, act), whole)
    np.testing.assert_array_equal(whole, ref_layer(arg, x, w, bn, act))


def test_layers_the_kpu_cannot_run_raise_format_errors():
    arg, x, w, bn, act = random_layer(True, 3, 0)
    arg.o_ch_num += 1
    with pytest.raises(KModelFormatError, match="depthwise"):
        kpu_conv(arg, x, w, bn, act)
    arg, x, w, bn, act = random_layer(True, 3, 1)
    with pytest.raises(KModelFormatError, match="pool_type"):           # spec 1.5.5: never pool a depthwise layer
        kpu_conv(arg, x, w, bn, act)
    arg, x, w, bn, act = random_layer(False, 3, 1)
    arg.o_row_wid += 1
    with pytest.raises(KModelFormatError, match="o_row_wid"):
        kpu_conv(arg, x, w, bn, act)
    arg, x, w, bn, act = random_layer(False, 3, 0)
    arg.kernel_type = 2
    with pytest.raises(KModelFormatError, match="kernel_type"):
        kpu_conv(arg, x, w, bn, act)
    arg, x, w, bn, act = random_layer(False, 3, 0)
    with pytest.raises(KModelFormatError, match="weights"):
        kpu_conv(arg, x, w[:2], bn, act)
    with pytest.raises(ValueError, match="arg_x_mode"):
        kpu_conv(arg, x, w, bn, act, arg_x_mode="other")


def test_tables_encode_decode():
    arg, x, w, bn, act = random_layer(False, 3, 1)
    arg2 = LayerArgument.from_bytes(arg.to_bytes())
    assert arg2.as_dict() == arg.as_dict()
    mul, shift, add = decode_bn_table(encode_bn_table(*bn), 4)
    assert np.array_equal(mul, bn[0]) and np.array_equal(shift, bn[1]) and np.array_equal(add, bn[2])
    act2 = ActTable.from_bytes(act.to_bytes())
    for field in ("x_start", "y_mul", "shift", "add"):
        assert np.array_equal(getattr(act2, field), getattr(act, field))


def ref_act(v, act):
    """Spec 1.5.3 for one int: highest segment with v > x_start, carry shift, bias, clamp."""
    seg = 0
    for s in range(16):
        if v > int(act.x_start[s]):
            seg = s
    t = (v - int(act.x_start[seg])) * int(act.y_mul[seg])
    return min(max(ref_round_shift(t, int(act.shift[seg])) + int(act.add[seg]), 0), 255)


@pytest.mark.parametrize("span,shape", [(3, "random"), (600, "random"), (1 << 20, "random"), (1 << 40, "steep"),
                                        (1 << 36, "plateaus"), (1 << 36, "unsorted")])
def test_activation_of_large_arrays_matches_the_reference(span, shape):
    """Large inputs go through a table of their range, clipped to where the output still changes (steep end
    segments; constant segments at the ends as emc and nncase write them); else element-wise."""
    starts = np.sort(RNG.integers(-300, 300, 16))
    starts[0] = -2 ** 35
    muls = RNG.integers(-2 ** 15, 2 ** 15, 16)
    shifts = RNG.integers(0, 21, 16)
    adds = RNG.integers(0, 256, 16)
    if shape == "steep":
        starts[0] = -400
        muls[[0, 15]] = RNG.choice([-1, 1], 2) * RNG.integers(2 ** 12, 2 ** 15, 2)
        shifts[[0, 15]] = RNG.integers(0, 14, 2)
    if shape == "plateaus":                     # 0 up to the ramp, then plateaus of 255, 254 and 255 again
        starts[15] = 2 ** 35 - 1
        muls[[0, 1, 2, 7, 13, 14, 15]] = 0
        adds[[0, 1, 2]], adds[[13, 14, 15]] = 0, (255, 254, 255)
        muls[[3, 12]] = 2 ** 14, 2 ** 13
        shifts[[3, 12]] = 4
    if shape == "unsorted":
        starts[[3, 9]] = starts[[9, 3]] + 1
        starts[0] = -500
    act = ActTable(starts, muls, shifts, adds)
    v = RNG.integers(-span, span + 1, (5, 7, 300))
    v[0, 0, :200] = RNG.integers(-1000, 1000, 200)
    got = act.apply(v)
    assert got.shape == v.shape and got.dtype == np.uint8
    np.testing.assert_array_equal(got.reshape(-1), [ref_act(int(e), act) for e in v.reshape(-1)])


@pytest.mark.parametrize("depthwise,kernel,pool", [(False, 3, 1), (True, 3, 0), (False, 1, 6)])
def test_a_batch_gives_each_sample_its_own_output(depthwise, kernel, pool):
    arg, x, w, bn, act = random_layer(depthwise, kernel, pool, c_in=4, c_out=5, h=8, w=12)
    xs = RNG.integers(0, 256, (3,) + x.shape).astype(np.uint8)
    got = kpu_conv(arg, xs, w, bn, act)
    assert got.shape == (3,) + ref_layer(arg, xs[0], w, bn, act).shape
    for sample, out in zip(xs, got):
        np.testing.assert_array_equal(out, ref_layer(arg, sample, w, bn, act))


@pytest.mark.parametrize("wmax", [255, 65535])
def test_products_past_float32_precision_stay_exact(wmax):
    """400 taps of 255 * 255 sum past 2^24 (and 16-bit weights past it at once): the sums must stay exact."""
    c_in, c_out, h, w = 400, 3, 2, 5
    arg = LayerArgument(i_ch_num=c_in - 1, o_ch_num=c_out - 1, i_row_wid=w - 1, i_col_high=h - 1,
                        o_row_wid=w - 1, o_col_high=h - 1, kernel_type=0)
    wts = RNG.integers(wmax - 2, wmax + 1, (c_out, c_in))
    band = RNG.integers(250, 256, (c_in, 2, h, w)).astype(np.uint8)
    want = np.einsum("oi,inhw->onhw", wts.astype(object), band.astype(object))
    got = kpu._products(arg, band, wts, h, w)
    assert got.dtype == np.int64 and (got.astype(object) == want).all()
