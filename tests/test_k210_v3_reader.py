"""The v3 reader on the real kmodels of nncase v0.1 and Maix-EMC, checked against the spec's listings (9.3)."""
import numpy as np
import pytest

import emc
from conftest import reference_path
from emc.platforms.k210.kpu import LayerArgument
from emc.platforms.k210.reader_v3 import KModelV3

V3_FILES = ["nncase_iris.kmodel", "nncase_yolo20.kmodel", "maixemc_cifar10.kmodel",
            "maixemc_cifar10_board.kmodel", "maixemc_mbnetv1_0.75.kmodel"]


def load(name):
    return emc.load_kmodel(reference_path("kmodel-v3", name))


@pytest.mark.parametrize("name", V3_FILES)
def test_every_reference_file_parses_and_prints(name):
    model = load(name)
    assert isinstance(model, KModelV3)
    text = str(model)
    assert "kmodel v3" in text and "file size" in text
    for layer in model.layers:
        if layer.code == 10240:       # the encoder reproduces every real layer argument bit for bit
            raw = model.data[layer.body.layer_offset:layer.body.layer_offset + 96]
            assert LayerArgument.from_bytes(raw).to_bytes() == raw


def test_maixemc_cifar_fields_match_listing():
    m = load("maixemc_cifar10.kmodel")
    assert [l.code for l in m.layers] == [10240, 8, 10243, 10240, 8, 21, 12, 18, 18]
    assert m.header.main_mem_usage == 40960 and m.outputs == [(40920, 40)]
    l3 = m.layers[3].arg
    assert (l3.pad_value, l3.arg_x, l3.shr_x, l3.arg_w, l3.shr_w, l3.arg_add) == (185, -3906599, 15, -7227311, 14, 473313)
    assert (l3.o_ch_num_coef, l3.load_time, l3.para_size, l3.image_dst_addr) == (63, 0, 18432, 32512)
    assert m.layers[0].arg.arg_x == -3909032 and m.layers[3].offset == 1636
    assert m.layers[6].body.scale == pytest.approx(0.00937873963)
    assert m.layers[7].extra["weights"].shape == (16, 4096)


def test_nncase_files_fields_match_listing():
    iris = load("nncase_iris.kmodel")
    assert [l.offset for l in iris.layers] == [52, 280] and iris.header.max_start_address == 32768
    assert len(iris.data) == 436             # nncase v0.1 leaves out the last body's padding
    yolo = load("nncase_yolo20.kmodel")
    l10 = yolo.layers[10].arg
    assert (l10.pool_type, l10.o_ch_num_coef, l10.load_time, l10.para_size) == (9, 119, 4, 30720)
    assert yolo.layers[16].name == "CHANNELWISE_DEQUANTIZE" and yolo.layers[16].body.channel_size == 70
    mb = load("maixemc_mbnetv1_0.75.kmodel")
    assert len(mb.layers) == 36 and mb.layers[31].arg.out_shape == (1000, 4, 4)
    assert mb.layers[12].arg.o_ch_num_coef == 340 and mb.layers[12].arg.pool_type == 5


def test_broken_inputs_raise_kmodel_format_error(tmp_path):
    data = reference_path("kmodel-v3", "maixemc_cifar10_board.kmodel").read_bytes()
    with pytest.raises(emc.KModelFormatError, match="offset"):
        emc.load_kmodel(data[:1000])
    bad = bytearray(data)
    bad[12:16] = (2 ** 31).to_bytes(4, "little")         # absurd layer count: fails fast
    with pytest.raises(emc.KModelFormatError, match="layers_length"):
        emc.load_kmodel(bytes(bad))
    with pytest.raises(emc.KModelFormatError, match="version"):
        emc.load_kmodel(b"\x07" + bytes(40))
    with pytest.raises(emc.EmcError, match="does not exist"):
        emc.load_kmodel(tmp_path / "none.kmodel")
    assert issubclass(emc.KModelFormatError, emc.EmcError)
