"""The v4 reader on nncase v0.2's real kmodels, checked against the spec's listings (9.3) and body tables (3.3-3.5)."""
import struct as pystruct

import numpy as np
import pytest

import emc
from conftest import reference_path
from emc.platforms.k210.v4.reader import KModelV4
from emc.platforms.k210.chip.layer_types import OPCODES
from emc.platforms.k210.v4.structs import struct

FLT_MAX = float(np.finfo(np.float32).max)
V4_FILES = ["nncase_iris.kmodel", "nncase_yolo20.kmodel", "nncase_ulffd_landmark.kmodel", "nncase_rfb320.kmodel",
            "nncase_slim320.kmodel"]

# From the spec's 9.3 listings: file size, header (constants, main_mem, nodes, inputs, outputs, reserved0), input
# ranges and shapes, output ranges, first body offset, and some nodes as {index: (body offset, body size, opcode)}.
LISTINGS = {
    "nncase_iris.kmodel": (720, (280, 216, 4, 1, 1, 0x176), ["main:f32[0+16]"], [(1, 1, 1, 4)], ["main:f32[40+12]"],
                           400, {0: (400, 64, 0x0C), 1: (464, 112, 0x04), 2: (576, 64, 0x0C), 3: (640, 80, 0x04)}),
    "nncase_yolo20.kmodel": (1352232, (0, 43752, 17, 1, 1, 0xCCCCCCCC), ["kpu:u8[0+230400]"], [(1, 3, 240, 320)],
                             ["main:f32[8752+35000]"], 224,
                             {0: (224, 1232, 0x2002), 10: (61952, 135680, 0x2002), 16: (1352192, 40, 0x03)}),
    "nncase_ulffd_landmark.kmodel": (418720, (24, 460800, 99, 1, 3, 0), ["kpu:u8[0+230400]"], [(1, 3, 240, 320)],
                                     ["main:f32[337600+50560]", "main:f32[115200+126400]", "main:f32[0+25280]"], 936,
                                     {0: (936, 1288, 0x2002), 20: (66600, 72, 0x01), 22: (66712, 136, 0x11),
                                      48: (184448, 88, 0x05), 98: (418632, 88, 0x01)}),
    "nncase_rfb320.kmodel": (333200, (0, 548736, 109, 1, 2, 0xCCCCCCCC), ["kpu:u8[0+230400]"], [(1, 3, 240, 320)],
                             ["main:f32[141536+70720]", "main:f32[106176+35360]"], 976,
                             {0: (976, 1248, 0x2002), 16: (30936, 64, 0x0C), 17: (31000, 48, 0x2001),
                              18: (31048, 3000, 0x2002), 38: (46472, 2936, 0x2002), 47: (58880, 136, 0x11)}),
    "nncase_slim320.kmodel": (307924, (0, 236480, 73, 1, 2, 0xCCCCCCCC), ["kpu:u8[0+230400]"], [(1, 3, 240, 320)],
                              ["main:f32[12056+35360]", "main:f32[165760+70720]"], 688,
                              {0: (688, 1280, 0x2002), 16: (35648, 1088, 0x2002), 45: (263272, 112, 0x01),
                               47: (263424, 72, 0x07), 72: (307816, 112, 0x01)}),
}


def load(name):
    return emc.load_kmodel(reference_path("kmodel-v4", name))


@pytest.mark.parametrize("name", V4_FILES)
def test_every_reference_file_parses_as_listed(name):
    size, header, inputs, shapes, outputs, bodies_at, nodes = LISTINGS[name]
    model = load(name)
    assert isinstance(model, KModelV4) and model.version == 4
    h = model.header
    assert model.data[:4] == b"LDMK" and (h.identifier, h.version, h.flags, h.target) == (0x4B4D444C, 4, 0, 1)
    assert (h.constants, h.main_mem, h.nodes, h.inputs, h.outputs, h.reserved0) == header
    assert len(model.data) == size and len(model.nodes) == header[2]
    assert [str(r) for r in model.inputs] == inputs and model.input_shapes == shapes
    assert [str(r) for r in model.outputs] == outputs
    assert model.nodes[0].offset == bodies_at
    for index, (offset, body_size, opcode) in nodes.items():
        node = model.nodes[index]
        assert (node.offset, node.body_size, node.opcode) == (offset, body_size, opcode), index
    # bodies are back to back; the last one may lack up to 7 bytes of padding (slim-320: 4, spec 9.3)
    ends = [n.offset + n.body_size for n in model.nodes]
    assert ends[:-1] == [n.offset for n in model.nodes[1:]]
    assert 0 <= ends[-1] - size < 8 and (ends[-1] - size == 4) == (name == "nncase_slim320.kmodel")


@pytest.mark.parametrize("name", V4_FILES)
def test_reencoding_reproduces_every_byte_but_the_msvc_garbage(name):
    model = load(name)
    data = model.data
    encoded = model.to_bytes()
    assert len(encoded) == sum(n.body_size for n in model.nodes) + model.nodes[0].offset
    assert encoded[len(data):] == bytes(len(encoded) - len(data))          # the unwritten final padding: zeros
    diff = np.nonzero(np.frombuffer(encoded[:len(data)], np.uint8) != np.frombuffer(data, np.uint8))[0]
    garbage = set()             # byte 7 of each of the 16 activation words: bits 60-63 of x_start's word
    for node in model.nodes:
        if node.name == "kpu_conv2d":
            act_at = node.offset + 120 + node.skips[0] + 8 * node.arg.out_shape[0] + node.skips[1]
            garbage.update(act_at + 8 * i + 7 for i in range(16))
    assert set(diff.tolist()) <= garbage
    assert all((data[d] ^ encoded[d]) & 0x0F == 0 for d in diff)           # only the top nibble differs
    # the encoder writes zeros there, and what it writes parses back to the same model
    again = KModelV4.from_bytes(encoded)
    assert again.to_bytes() == encoded


def test_iris_nodes_match_the_listing():
    m = load("nncase_iris.kmodel")
    assert [n.name for n in m.nodes] == ["transpose", "matmul", "transpose", "matmul"]
    t = m.nodes[0]
    assert (str(t.range("input")), str(t.range("output"))) == ("const:f32[0+160]", "main:f32[16+160]")
    assert t.shape("in_shape") == (1, 1, 10, 4) and t.shape("perm") == (0, 1, 3, 2)
    mm = m.nodes[1].body
    assert (mm.a_rows, mm.a_cols, mm.b_cols) == (1, 4, 10)
    assert [str(m.nodes[1].range(f)) for f in ("input_a", "input_b", "output")] == \
        ["main:f32[0+16]", "main:f32[16+160]", "main:f32[176+40]"]
    assert (mm.fused_activation.min, mm.fused_activation.max) == (0.0, FLT_MAX)            # relu
    last = m.nodes[3].body.fused_activation
    assert (last.min, last.max) == (-FLT_MAX, FLT_MAX)
    assert m.nodes[3].extra["bias"].shape == (3,) and len(m.constants) == 280


def test_yolo_kpu_nodes_match_the_listing():
    m = load("nncase_yolo20.kmodel")
    first = m.nodes[0]
    a = first.arg
    assert (a.in_shape, a.out_shape, a.kernel, a.depthwise, a.pool_type) == ((3, 240, 320), (16, 120, 160), 3, False, 1)
    assert (a.image_src_addr, a.image_dst_addr, a.pad_value, a.arg_x, a.arg_w, a.arg_add) == (0, 3600, 0, -134, 0, 0)
    assert (a.o_ch_num_coef, a.load_time, a.para_size, first.skips) == (15, 0, 432, (168, 128, 112))
    assert first.weights.shape == (16, 3, 3, 3) and first.bn[0].shape == (16,)
    dw = m.nodes[1].arg
    assert (dw.depthwise, dw.pad_value, dw.arg_x, dw.arg_w, dw.arg_add) == (True, 12, -130, -12, 14040)
    assert m.nodes[1].weights.shape == (16, 3, 3)
    n15 = m.nodes[15]
    assert str(n15.range("main_mem_output")) == "main:u8[0+8750]" and n15.arg.out_shape == (125, 7, 10)
    assert (n15.arg.o_ch_num_coef, n15.arg.load_time, n15.arg.para_size, n15.skips) == (59, 2, 30720, (136, 24, 112))
    assert m.nodes[14].range("main_mem_output").absent
    q = m.nodes[16].body.quant_param
    assert m.nodes[16].name == "dequantize" and q.zero_point == 125 and q.scale == pytest.approx(7.72732115)
    # MSVC left 0xC in bits 60-63 of the activation words; x_start is decoded without them
    assert set(np.unique(first.extra["act_high_bits"]).tolist()) == {0xC}
    assert first.act.x_start[0] == -(1 << 35)


def test_ulffd_cpu_nodes_match_the_listing():
    m = load("nncase_ulffd_landmark.kmodel")
    qb = m.nodes[22]
    b = qb.body
    assert qb.name == "quantized_binary" and b.binary_op == 5 and str(qb.range("input_b")) == "const:u8[0+1]"
    assert (qb.shape("in_a_shape"), qb.shape("in_b_shape")) == ((1, 48, 30, 40), (1, 1, 1, 1))
    assert (b.input_a_offset, b.input_a_mul, b.input_a_shift, b.input_b_offset, b.input_b_mul, b.input_b_shift,
            b.output_offset, b.output_mul, b.output_shift) == (-160, 25500, 0, 0, 28800, 11, 0, 453244, 32)
    cat = m.nodes[20]
    assert (cat.body.inner_size, cat.body.outer_size, cat.extra["dims"].tolist()) == (4800, 1, [32, 16])
    assert [str(r) for r in cat.extra["inputs"]] == ["main:f32[307200+153600]", "main:f32[0+76800]"]
    assert str(cat.range("output")) == "main:f32[76800+230400]"
    pad = m.nodes[48]
    assert [(p.before, p.after) for p in pad.body.paddings] == [(0, 0), (0, 0), (0, 1), (0, 0)]
    assert pad.body.pad_value.type == 0 and bytes(pad.body.pad_value.storage) == bytes(4)
    assert m.nodes[0].arg.pad_value == 128 and m.nodes[0].arg.arg_add == 173952
    assert [n.name for n in m.nodes].count("memory_copy") == 9


def test_rfb_batched_and_cropping_nodes_match_the_listing():
    m = load("nncase_rfb320.kmodel")
    t = m.nodes[16]
    assert t.name == "transpose" and t.shape("in_shape") == (272, 2, 22, 2) and t.shape("perm") == (1, 3, 0, 2)
    up = m.nodes[17]
    assert str(up.range("output")) == "kpu:u8[72704+34816]" and up.shape("in_shape") == (4, 16, 17, 22)
    conv = m.nodes[18]
    assert conv.body.batches == 4 and (conv.arg.image_src_addr, conv.arg.image_dst_addr) == (1136, 592)
    assert conv.arg.in_shape == (16, 17, 22) and str(conv.range("main_mem_output")) == "main:u8[43136+23936]"
    crop = m.nodes[19]
    assert [(p.before, p.after) for p in crop.body.paddings] == [(0, 0), (0, 0), (-1, -1), (-1, -1)]
    assert m.nodes[38].body.batches == 25 and m.nodes[38].skips == (0, 128, 112)
    add = m.nodes[47].body
    assert (add.binary_op, add.input_a_offset, add.input_b_offset, add.output_mul) == (0, -158, -120, 268988160)


def test_slim_softmax_nodes_match_the_listing():
    m = load("nncase_slim320.kmodel")
    red = m.nodes[47]
    assert red.name == "reduce" and red.body.reduce_op == 2 and red.body.init_value == -FLT_MAX
    assert (red.shape("in_shape"), red.shape("out_shape")) == ((1, 1, 4420, 2), (1, 1, 4420, 1))
    assert m.nodes[53].body.reduce_op == 3 and m.nodes[51].body.unary_op == 3
    sub = m.nodes[49].body
    assert (sub.binary_op, sub.input_a_offset, sub.input_a_mul, sub.input_a_shift, sub.input_b_offset,
            sub.input_b_mul, sub.input_b_shift, sub.output_offset, sub.output_mul, sub.output_shift) == \
        (1, -127, 24384, 8, 0, 24390, 9, 255, 45091952, 32)
    assert m.nodes[55].body.binary_op == 3
    assert m.nodes[45].extra["dims"].tolist() == [3600, 600, 160, 60] and m.nodes[45].body.inner_size == 8


def test_summary_and_printed_table():
    m = load("nncase_ulffd_landmark.kmodel")
    rows = m.summary()
    assert len(rows) == 99 and rows[0]["unit"] == "KPU" and rows[0]["type"] == "kpu_conv2d"
    assert rows[0]["input"] == (1, 3, 240, 320) and rows[0]["output"] == (1, 16, 120, 160)
    assert rows[0]["macs"] == 16 * 240 * 320 * 27             # the conv runs at input resolution, then pools
    assert rows[25]["type"] == "transpose" and rows[25]["output"] == (1, 30, 40, 8)
    text = str(m)
    assert "kmodel v4" in text and "kpu_conv2d" in text and "quantized_binary" in text
    assert "MACs on KPU" in text and "main memory" in text and "460,800" in text
    assert "main:f32[337600+50560]" in text
    assert "reserved0" not in text                            # this file's header has a clean reserved0
    assert "reserved0 = 0xcccccccc" in str(load("nncase_slim320.kmodel"))


# Byte sizes of the fixed part of every body, from the spec's table 3.4 (before the 8-byte alignment).
SPEC_BODY_SIZES = {"binary": 108, "quantized_binary": 136, "concat": 28, "conv2d": 104, "quantized_conv2d": 116,
                   "dequantize": 40, "quantize": 40, "matmul": 68, "quantized_matmul": 80, "pad": 88, "reduce": 72,
                   "reduce_window2d": 104, "memory_copy": 32, "resize_image": 64, "softmax": 44, "transpose": 64,
                   "strided_slice": 116, "unary": 36, "table_lookup1d": 48, "conv2d_transpose": 116,
                   "nnil_unary_method": 32, "kpu_upload": 48, "kpu_conv2d": 120}
SPEC_OPCODES = {0x00: "binary", 0x01: "concat", 0x02: "conv2d", 0x03: "dequantize", 0x04: "matmul", 0x05: "pad",
                0x06: "quantize", 0x07: "reduce", 0x08: "reduce_window2d", 0x09: "memory_copy", 0x0A: "resize_image",
                0x0B: "softmax", 0x0C: "transpose", 0x0D: "strided_slice", 0x0E: "unary", 0x0F: "quantized_conv2d",
                0x10: "quantized_matmul", 0x11: "quantized_binary", 0x12: "table_lookup1d", 0x13: "conv2d_transpose",
                0x14: "nnil_unary_method", 0x1001: "cpu_conv2d", 0x1002: "cpu_depthwise_conv2d",
                0x1003: "cpu_reduce_window2d", 0x1004: "cpu_quantized_conv2d",
                0x1005: "cpu_quantized_depthwise_conv2d", 0x2001: "kpu_upload", 0x2002: "kpu_conv2d"}


def test_opcode_table_and_struct_sizes_follow_the_spec():
    assert {code: name for code, (name, _, _) in OPCODES.items()} == SPEC_OPCODES
    for code, (name, struct_name, unit) in OPCODES.items():
        assert unit == ("KPU" if code >= 0x2000 else "CPU")
        if name in SPEC_BODY_SIZES:
            assert len(struct(struct_name)) == SPEC_BODY_SIZES[name], name
    assert (len(struct("model_header")), len(struct("memory_range")), len(struct("node_header"))) == (40, 16, 8)


def test_struct_fields_decode_where_the_spec_puts_them():
    # quantized_binary: out_offset, out_mul, out_shift come in that order (spec 8.4), after three 16-byte shapes
    raw = bytearray(136)
    pystruct.pack_into("<I", raw, 48, 3)                              # binary_op after three memory ranges
    pystruct.pack_into("<9i", raw, 100, 1, 2, 3, 4, 5, 6, 7, 8, 9)
    b = struct("quantized_binary_options")(bytes(raw))
    assert b.binary_op == 3
    assert (b.input_a_offset, b.input_b_shift, b.output_offset, b.output_mul, b.output_shift) == (1, 6, 7, 8, 9)
    raw = bytearray(120)
    pystruct.pack_into("<4I2i", raw, 0, 1, 1, 64, 128, 5, 0)
    pystruct.pack_into("<Q", raw, 24 + 8, 7 | (9 << 32))           # layer word 1: image_src_addr, image_dst_addr
    k = struct("kpu_conv2d_options")(bytes(raw))
    assert (k.main_mem_output.start, k.main_mem_output.size, k.batches, k.layer[1]) == (64, 128, 5, 7 | (9 << 32))


def load_bytes(data):
    return emc.load_kmodel(bytes(data))


def expect_error(data, field_part, message_part=""):
    with pytest.raises(emc.KModelFormatError) as info:
        load_bytes(data)
    assert field_part in (info.value.field or ""), (info.value.field, str(info.value))
    assert message_part in str(info.value)
    return info.value


def test_broken_files_name_offset_and_field():
    data = bytearray(reference_path("kmodel-v4", "nncase_iris.kmodel").read_bytes())
    expect_error(data[:30], "model_header", "truncated")
    bad = bytearray(data)
    bad[4] = 5
    assert expect_error(bad, "version").offset == 4
    bad = bytearray(data)
    pystruct.pack_into("<I", bad, 12, 7)
    expect_error(bad, "target")
    bad = bytearray(data)
    pystruct.pack_into("<I", bad, 20, 64 << 20)
    expect_error(bad, "main_mem", "SRAM")
    bad = bytearray(data)
    pystruct.pack_into("<I", bad, 24, 1000)                          # nodes: tables run past the file
    expect_error(bad, "nodes", "1000")
    bad = bytearray(data)
    pystruct.pack_into("<I", bad, 368, 0x77)                         # node 0 opcode
    assert expect_error(bad, "nodes[0].opcode", "0x77").offset == 368
    bad = bytearray(data)
    pystruct.pack_into("<I", bad, 368 + 8 * 3 + 4, 4000)            # last body size
    expect_error(bad, "nodes[3].body_size", "past the end")
    bad = bytearray(data)
    pystruct.pack_into("<I", bad, 40 + 8, 208)                      # input 0 start: beyond main_mem (216)
    expect_error(bad, "inputs[0].start", "216")
    bad = bytearray(data)
    pystruct.pack_into("<I", bad, 400 + 16, 9)                       # node 0 output memory type
    assert expect_error(bad, "nodes[0].output.memory_type").offset == 416
    bad = bytearray(data)
    pystruct.pack_into("<4i", bad, 400 + 48, 0, 2, 2, 3)             # transpose perm with a repeat
    assert expect_error(bad, "nodes[0].perm", "permutation").offset == 400 + 48
    bad = bytearray(data)
    pystruct.pack_into("<i", bad, 464 + 56, 1 << 20)                 # matmul b_cols: the bias runs past the body
    expect_error(bad, "nodes[1].bias", "bytes")
    with pytest.raises(emc.KModelFormatError):
        KModelV4.from_bytes(b"KMDL" + bytes(60))


def test_broken_kpu_conv_is_caught_before_running():
    data = bytearray(reference_path("kmodel-v4", "nncase_yolo20.kmodel").read_bytes())
    layer = 224 + 24                                                  # node 0's layer argument
    bad = bytearray(data)
    word = pystruct.unpack_from("<Q", bad, layer + 32)[0]
    pystruct.pack_into("<Q", bad, layer + 32, word | 0xF0)          # pool_type 15
    expect_error(bad, "pool_type")
    bad = bytearray(data)
    pystruct.pack_into("<Q", bad, layer + 32, (word & ~(0xFFFFFFFF << 32)) | (5000 << 32))   # skip 5000 bytes
    expect_error(bad, "bwsx_base_addr", "skip")
    bad = bytearray(data)
    word = pystruct.unpack_from("<Q", bad, layer + 8)[0]
    pystruct.pack_into("<Q", bad, layer + 8, word | 0x7FFF)         # input at line 32767: runs past the KPU RAM
    expect_error(bad, "image_src_addr", "KPU RAM")
