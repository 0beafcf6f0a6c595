"""The crafted kmodels of issue 15 (items 1-3), built here from the shared reference files: each is refused when
it is read (KModelFormatError naming the field) or runs, within 2 GiB and a few seconds -- never a multi-GiB
allocation, a numpy ValueError or a hang."""
import struct

import pytest

import emc
import kmodel_fuzz
from conftest import reference_path

HUGE = 2 ** 31 - 1
V3_TABLE = 36                  # maixemc_cifar10: 28-byte header + 1 output entry; layer i's entry at 36 + 8 i
IRIS_V4_NODES = 368            # nncase_iris v4: node i's header (opcode, body_size) at 368 + 8 i


def patched(path, *edits):
    """The file's bytes with (offset, struct format, values...) edits applied."""
    data = bytearray(reference_path(*path.split("/")).read_bytes())
    for offset, fmt, *values in edits:
        struct.pack_into(fmt, data, offset, *values)
    return bytes(data)


def crafted():
    """{name: bytes} of every crafted file; names say the site of the issue each one reached."""
    cifar, iris4, ulffd = "kmodel-v3/maixemc_cifar10.kmodel", "kmodel-v4/nncase_iris.kmodel", \
        "kmodel-v4/nncase_ulffd_landmark.kmodel"
    return {
        # v3 (maixemc_cifar10: max pool layers 1 and 4 @1552 / @20880, flatten 5 @20940, dequantize 6 @20964)
        "v3_flatten_zero_by_huge.kmodel": patched(cifar, (20952, "<3I", 0xFFFFFFFF, 0xFFFFFFFF, 0)),
        "v3_max_pool_output_height.kmodel": patched(cifar, (20880 + 24, "<2I", 0, 0xFFFFFFF0)),
        "v3_quantized_gap_channels.kmodel": patched(cifar, (V3_TABLE + 8 * 6, "<I", 6),
                                                    (20964 + 12, "<2I", 0, 1_500_000_000)),
        "v3_resize_from_a_pool.kmodel": patched(cifar, (V3_TABLE + 8 * 4, "<I", 23),
                                                (20880 + 12, "<5I", 0, HUGE, HUGE, 0, HUGE)),
        # v4 (nncase_iris: transpose 0 @400, matmul 1 @464; ulffd: quantized_binary 22 @66712, kpu_upload 23 @66848)
        "v4_pad_over_a_matmul_body.kmodel": patched(iris4, (IRIS_V4_NODES + 8, "<I", 5)),
        "v4_transpose_zero_by_huge.kmodel": patched(iris4, (400 + 32, "<4i", 0, HUGE, HUGE, 1)),
        "v4_resize_image_over_a_transpose.kmodel": patched(iris4, (IRIS_V4_NODES, "<I", 0x0A),
                                                           (400 + 48, "<3i", 1 << 30, 1 << 30, 1)),
        "v4_reduce_over_a_matmul_body.kmodel": patched(iris4, (IRIS_V4_NODES + 8, "<I", 7),
                                                       (464 + 32, "<I8i", 3, 1, 0, HUGE, HUGE, 1, 1, 1, 1)),
        "v4_reduce_window2d_padding.kmodel": patched(iris4, (IRIS_V4_NODES + 8, "<I", 8),
                                                     (464 + 32, "<I14i", 2, 1, 1, 1, 1, 0, 1 << 30, 0, 1 << 30,
                                                      1, 1, 1, 1, 1, 1)),
        "v4_quantized_binary_gather.kmodel": patched(ulffd, (66712 + 52, "<4i", 1, 0, HUGE, HUGE),
                                                     (66712 + 84, "<4i", 1, 1 << 16, 1 << 16, 1)),
        "v4_kpu_upload_batches_of_nothing.kmodel": patched(ulffd, (66848 + 32, "<i", HUGE), (66848 + 40, "<i", 0)),
        "v4_kpu_upload_addresses.kmodel": patched(ulffd, (66848 + 32, "<4i", 1, 1, 0, HUGE)),
    }


def test_every_crafted_file_stays_within_memory_and_time(tmp_path):
    files = crafted()
    result = kmodel_fuzz.check_files(files, str(tmp_path / "crafted"), case_seconds=20)
    assert not result["findings"], result["findings"]
    assert result["counts"]["ok"] + result["counts"]["emc errors"] == len(files)
    assert result["peak_rss"] < 1 << 30


NAMES = ["v3_flatten_zero_by_huge", "v3_max_pool_output_height", "v3_quantized_gap_channels", "v3_resize_from_a_pool",
         "v4_pad_over_a_matmul_body", "v4_transpose_zero_by_huge", "v4_resize_image_over_a_transpose",
         "v4_reduce_over_a_matmul_body", "v4_reduce_window2d_padding", "v4_quantized_binary_gather",
         "v4_kpu_upload_batches_of_nothing", "v4_kpu_upload_addresses"]


def test_the_names_list_every_crafted_file():
    assert sorted(n + ".kmodel" for n in NAMES) == sorted(crafted())


@pytest.mark.parametrize("name", NAMES)
def test_the_impossible_shape_is_refused_when_the_file_is_read(name):
    with pytest.raises(emc.KModelFormatError) as err:
        emc.load_kmodel(crafted()[name + ".kmodel"])
    assert "field" in str(err.value) and "offset" in str(err.value)
