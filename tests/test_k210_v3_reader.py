"""The v3 reader on the real kmodels of nncase v0.1 and Maix-EMC, checked against the spec's listings (9.3)."""
import pytest

from conftest import reference_path
from emc.errors import EmcError, KModelFormatError
from emc.platforms.k210.kmodel import load_kmodel
from emc.platforms.k210.chip.kpu import LayerArgument, decode_act_table, decode_bn_table, encode_act_table, encode_bn_table
from emc.platforms.k210.v3.reader import KModelV3

V3_FILES = ["nncase_iris.kmodel", "nncase_yolo20.kmodel", "maixemc_cifar10.kmodel",
            "maixemc_cifar10_board.kmodel", "maixemc_mbnetv1_0.75.kmodel"]


def load(name):
    return load_kmodel(reference_path("kmodel-v3", name))


@pytest.mark.parametrize("name", V3_FILES)
def test_every_reference_file_parses_prints_and_reencodes(name):
    model = load(name)
    assert isinstance(model, KModelV3) and model.version == 3 and model.arch == 0
    assert model.layers_length == len(model.layers) == len(model.summary())
    text = str(model)
    assert "kmodel v3" in text and "file size" in text and "MACs on KPU" in text
    assert text.count("\n") > len(model.layers)
    data = model.data
    for layer in model.layers:
        if layer.code != 10240:
            continue
        b, a = layer.body, layer.arg
        raw = data[b.layer_offset:b.layer_offset + 96]       # the encoder reproduces every real layer argument
        assert LayerArgument.from_bytes(raw).to_bytes() == raw
        c_out = a.out_shape[0]
        bn = data[b.bn_offset:b.bn_offset + 8 * c_out]
        assert encode_bn_table(*decode_bn_table(bn, c_out)) == bn
        act = data[b.act_offset:b.act_offset + 144]
        assert encode_act_table(decode_act_table(act)) == act
        assert a.problems() == []                           # every real layer is one the KPU model runs
        # spec 1.3 derived fields hold in every file
        assert a.channel_byte_num == a.out_shape[1] * a.out_shape[2] - 1
        assert a.dma_total_byte == c_out * a.out_shape[1] * a.out_shape[2] - 1


def test_maixemc_cifar_fields_match_listing():
    m = load("maixemc_cifar10.kmodel")
    assert [l.code for l in m.layers] == [10240, 8, 10243, 10240, 8, 21, 12, 18, 18]
    assert [l.offset for l in m.layers] == [108, 1552, 1612, 1636, 20880, 20940, 20964, 20988, 283220]
    assert m.header.main_mem_usage == 40960 and m.outputs == [(40920, 40)] and m.eight_bit
    l3 = m.layers[3].arg
    assert (l3.pad_value, l3.arg_x, l3.shr_x, l3.arg_w, l3.shr_w, l3.arg_add) == \
        (185, -3906599, 15, -7227311, 14, 473313)
    assert (l3.o_ch_num_coef, l3.load_time, l3.para_size, l3.image_dst_addr) == (63, 0, 18432, 32512)
    assert (m.layers[3].body.layer_offset, m.layers[3].body.weights_offset, m.layers[3].body.bn_offset,
            m.layers[3].body.act_offset) == (1664, 1792, 20224, 20736)
    assert m.layers[0].arg.arg_x == -3909032 and m.layers[0].arg.in_shape == (3, 32, 32)
    pool = m.layers[1].body
    assert (pool.in_shape.width, pool.out_shape.channels, pool.kernel_width, pool.stride_height) == (32, 32, 3, 2)
    assert m.layers[6].body.scale == pytest.approx(0.00937873963) and m.layers[6].body.count == 4096
    assert m.layers[7].extra["weights"].shape == (16, 4096) and m.layers[7].body.act == 1
    board = load("maixemc_cifar10_board.kmodel")
    assert (board.layers[3].arg.pad_value, board.layers[3].arg.arg_w) == (0, 0)


def test_nncase_files_fields_match_listing():
    iris = load("nncase_iris.kmodel")
    assert [l.offset for l in iris.layers] == [52, 280] and iris.header.max_start_address == 32768
    assert len(iris.data) == 436             # nncase v0.1 leaves out the last body's padding
    assert [l.body_size for l in iris.layers] == [228, 160] and iris.layers[0].body.act == 1
    yolo = load("nncase_yolo20.kmodel")
    assert yolo.main_mem_usage == 43752 and yolo.outputs == [(8752, 35000)]
    l0, l1 = yolo.layers[0].arg, yolo.layers[1].arg
    assert (l0.image_src_addr, l0.image_dst_addr, l0.pool_type, l0.in_shape, l0.out_shape) == \
        (29168, 0, 1, (3, 240, 320), (16, 120, 160))
    assert (l1.depthwise, l1.pad_value, l1.arg_x, l1.arg_w, l1.shr_w, l1.arg_add) == (True, 13, -4259840, -425984, 15,
                                                                                       15210)
    l10 = yolo.layers[10].arg
    assert (l10.pool_type, l10.o_ch_num_coef, l10.load_time, l10.para_size) == (9, 119, 4, 30720)
    assert yolo.layers[16].name == "CHANNELWISE_DEQUANTIZE" and yolo.layers[16].body.channel_size == 70
    assert yolo.layers[16].extra["scale"].shape == (125,)
    mb = load("maixemc_mbnetv1_0.75.kmodel")
    assert len(mb.layers) == 36 and mb.main_mem_usage == 602112 and mb.outputs == [(598112, 4000)]
    assert mb.layers[31].arg.out_shape == (1000, 4, 4) and mb.layers[31].arg.image_dst_addr == 31768
    assert (mb.layers[31].arg.o_ch_num_coef, mb.layers[31].arg.load_time, mb.layers[31].arg.para_size) == \
        (82, 12, 63744)
    assert mb.layers[12].arg.o_ch_num_coef == 340 and mb.layers[12].arg.pool_type == 5
    assert (mb.layers[28].body.kernel_size, mb.layers[28].body.channels) == (49, 768)
    assert mb.layers[27].body.scale == pytest.approx(0.0235294122)


def test_summary_rows_for_a_cli():
    rows = load("nncase_yolo20.kmodel").summary()
    first, last = rows[0], rows[-1]
    assert first["type"] == "K210_CONV" and first["unit"] == "KPU" and first["input"] == (3, 240, 320)
    assert first["output"] == (16, 120, 160) and first["in_addr"] == "kpu:29168"
    assert first["macs"] == 16 * 3 * 9 * 240 * 320 and first["weights"] == 432
    assert last["unit"] == "CPU" and last["out_bytes"] == 35000 and last["out_addr"] == "m:8752"
    assert set(first) >= {"index", "type", "unit", "input", "output", "in_addr", "out_addr", "out_bytes", "macs",
                          "weights", "body"}


def test_broken_inputs_raise_kmodel_format_error(tmp_path):
    data = reference_path("kmodel-v3", "maixemc_cifar10_board.kmodel").read_bytes()
    with pytest.raises(KModelFormatError, match="offset"):
        load_kmodel(data[:1000])
    bad = bytearray(data)
    bad[12:16] = (2 ** 31).to_bytes(4, "little")         # absurd layer count: fails fast
    with pytest.raises(KModelFormatError, match="layers_length"):
        load_kmodel(bytes(bad))
    bad = bytearray(data)
    bad[36:40] = (99).to_bytes(4, "little")              # layer 0 type
    with pytest.raises(KModelFormatError, match=r"layers\[0\].type"):
        load_kmodel(bytes(bad))
    bad = bytearray(data)
    bad[108 + 12:108 + 16] = (len(data) - 10).to_bytes(4, "little")      # K210_CONV weights_offset
    with pytest.raises(KModelFormatError, match="weights_offset"):
        load_kmodel(bytes(bad))
    with pytest.raises(KModelFormatError, match="version"):
        load_kmodel(b"\x07" + bytes(40))
    with pytest.raises(KModelFormatError, match="header"):
        load_kmodel(b"\x03\x00")
    with pytest.raises(EmcError, match="does not exist"):
        load_kmodel(tmp_path / "none.kmodel")
    iris = reference_path("kmodel-v3", "nncase_iris.kmodel").read_bytes()
    load_kmodel(iris)                                    # 4 bytes short of its table: the nncase v0.1 quirk
    with pytest.raises(KModelFormatError, match="bias|weights|runs past"):
        load_kmodel(iris[:-8])
