"""Chip budgets of the C and STM32 platforms: chip= / --chip and ram_limit= / flash_limit= refuse a model that does
not fit with both sizes and the biggest tensors or weights, and the report says how much of the part it uses."""
import numpy as np
import pytest

from conftest import reference_path
from emc.calibrate import calibrate
from emc.errors import PlatformLimitError
from emc.graph import Graph
from emc.layers import Act, Conv2D, Dense, Flatten
from emc.platforms import c as cplat
from emc.platforms.c.budget import CHIPS
from test_cli import assert_one_line_error, emc_cli


def wide_graph():
    """A 64x64x16 feature map (RAM) and a 65,536 x 4 dense layer (flash): too big for an STM32F103C8."""
    rng = np.random.default_rng(0)
    g = Graph("wide")
    x = g.add_input((64, 64, 3), "image")
    a = g.add(Conv2D(rng.normal(0, .3, (3, 3, 3, 16)), None, 1, 1, (1, 1, 1, 1), Act("relu")), [x], name="features")
    b = g.add(Dense(rng.normal(0, .01, (65536, 4)), np.zeros(4)), [g.add(Flatten(), [a], name="flat")],
              name="classifier")
    g.set_outputs([b])
    return g, calibrate(g, [rng.uniform(0, 1, (8, 64, 64, 3)).astype(np.float32)])


def test_a_model_too_big_for_the_chip_names_sizes_and_biggest_parts():
    g, cal = wide_graph()
    with pytest.raises(PlatformLimitError) as err:
        cplat.convert(g, cal, name="wide", chip="STM32F103")
    text = str(err.value)
    assert len(err.value.problems) == 2
    ram_problem, flash_problem = err.value.problems
    assert "the STM32F103C8" in ram_problem and f"{20 * 1024:,} bytes" in ram_problem
    assert "biggest tensors: 'features' 65,536 B" in ram_problem
    assert f"{64 * 1024:,} bytes" in flash_problem and "biggest weights: 'classifier' 2" in flash_problem
    fits = cplat.convert(g, cal, name="wide", chip="stm32f746ng")
    ram = fits.plan.arena_bytes + fits.plan.input_bytes + fits.plan.output_bytes
    assert f"needs {ram:,} bytes of RAM" in text
    assert f"needs {fits.program.weight_bytes:,} bytes of flash" in text
    usage = fits.report.totals
    part = CHIPS["stm32f746ng"][2]
    assert usage[f"RAM of {part}"].startswith(f"{ram:,} of {320 * 1024:,} bytes ({100 * ram / (320 * 1024):.1f}%)")
    assert usage[f"flash of {part}"].startswith(f"{fits.program.weight_bytes:,} of {1024 * 1024:,} bytes")


def test_explicit_limits_win_over_the_chip_and_unknown_chips_are_listed():
    g, cal = wide_graph()
    art = cplat.convert(g, cal, name="wide", chip="stm32f103c8", ram_limit=10**6, flash_limit=10**6)
    assert "RAM of the limit" in art.report.totals and "flash of the limit" in art.report.totals
    with pytest.raises(PlatformLimitError, match="more than ram_limit=1,000 bytes"):
        cplat.convert(g, cal, name="wide", chip="stm32h743", ram_limit=1000)
    with pytest.raises(PlatformLimitError, match="unknown chip 'z80'; known chips: .*nrf52840.*rp2040"):
        cplat.convert(g, cal, name="wide", chip="z80")


def test_cli_chip_option():
    model, images = reference_path("float-models", "maixemc_cifar10.h5"), reference_path("images", "cifar10")
    result = emc_cli("convert", model, "-o", "/nonexistent/never", "--dataset", images, "--platform", "c",
                     "--chip", "stm32f103c8", "--ram-limit", "1000000", "-q")
    assert_one_line_error(result, "of flash", "the STM32F103C8", "has 65,536 bytes", "biggest weights:")
    assert_one_line_error(emc_cli("convert", model, "-o", "/nonexistent/x.kmodel", "--dataset", images, "--chip",
                                  "rp2040"), "--chip is a c / stm32 option")


def test_the_cmsis_build_has_its_own_flash_line_and_a_note_when_it_does_not_fit():
    """A CMSIS-NN build keeps the convs' weights widened to int16: its flash is counted on its own line."""
    from emc.platforms.c.cmsis import widened_weight_bytes
    g, cal = wide_graph()
    plain = cplat.convert(g, cal, name="wide", flash_limit=10**6)
    extra = widened_weight_bytes(plain.program.steps)
    assert extra > 0
    flash = plain.program.weight_bytes
    assert plain.report.totals["flash of the limit, CMSIS-NN build"].startswith(f"{flash + extra:,} of 1,000,000")
    assert not any("CMSIS-NN build" in note for note in plain.report.notes)
    tight = cplat.convert(g, cal, name="wide", flash_limit=flash + extra - 1)
    assert any(f"needs {flash + extra:,} bytes of flash" in note and "build without it" in note
               for note in tight.report.notes)
