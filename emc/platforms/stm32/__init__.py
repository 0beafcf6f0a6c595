"""The STM32 (Cortex-M) platform: the generic C platform's int8 code plus what a Cortex-M project needs.

The kernels call CMSIS-NN's s8 functions when EMC_USE_CMSIS_NN is defined and the portable C otherwise; the
artefact adds a Makefile fragment and a CMake fragment; the report gives flash and RAM as arm-none-eabi-size
counts them when the cross compiler is installed ('not measured' otherwise); toolchain.run_on_qemu runs
models on QEMU's mps2-an386 Cortex-M4 with semihosting.
"""
import logging

from ..c import C_FLASH_TEXT, TABLE, budget, build, recurrent, supported_kinds
from ..c.codegen import c_identifier
from . import toolchain
from .artefact import STM32Artefact

log = logging.getLogger(__name__)
PLATFORM = "stm32"


def makefile_fragment(ident, files, cpu):
    """A Makefile include: sources, include path and flags (C_SOURCES / C_INCLUDES as STM32CubeMX names them)."""
    tag = f"EMC_{ident.upper()}"
    sources = " \\\n    ".join(f"$({tag}_DIR){f}" for f in sorted(files) if f.endswith(".c"))
    return "\n".join([
        f"# emc model '{ident}': `include emc_{ident}.mk` in your Makefile.",
        f"# For CMSIS-NN kernels add -DEMC_USE_CMSIS_NN to {tag}_CFLAGS, CMSIS-NN's Include/ to C_INCLUDES",
        "# and its Source/ files to C_SOURCES. -DEMC_USE_ARM_DSP uses the DSP extension's __smlad (same results).",
        f"{tag}_DIR := $(dir $(lastword $(MAKEFILE_LIST)))",
        f"{tag}_SOURCES := \\\n    {sources}",
        f"{tag}_CFLAGS := -std=c99 -O2 {' '.join(toolchain.cpu_flags(cpu))} -ffunction-sections -fdata-sections",
        f"C_SOURCES += $({tag}_SOURCES)",
        f"C_INCLUDES += -I$({tag}_DIR)",
        "",
    ])


def cmake_fragment(ident, files):
    """A CMake include that defines the static library emc_<name> (option EMC_USE_CMSIS_NN)."""
    sources = "\n    ".join("${CMAKE_CURRENT_LIST_DIR}/" + f for f in sorted(files) if f.endswith(".c"))
    return "\n".join([
        f"# emc model '{ident}': include(emc_{ident}.cmake) then link emc_{ident}.",
        f"add_library(emc_{ident} STATIC\n    {sources})",
        f"target_include_directories(emc_{ident} PUBLIC ${{CMAKE_CURRENT_LIST_DIR}})",
        f"set_target_properties(emc_{ident} PROPERTIES C_STANDARD 99)",
        "option(EMC_USE_CMSIS_NN \"route emc kernels through CMSIS-NN (link a target named cmsis-nn)\" OFF)",
        "if(EMC_USE_CMSIS_NN)",
        f"    target_compile_definitions(emc_{ident} PRIVATE EMC_USE_CMSIS_NN)",
        f"    target_link_libraries(emc_{ident} PUBLIC cmsis-nn)",
        "endif()",
        "",
    ])


def convert(graph, calibration, quant_bit=8, input_transform=None, name="model", ram_limit=None, flash_limit=None,
            cpu="cortex-m4", measure=True, chip=None, **ignored):
    """Generate the int8 C for a Cortex-M and measure it; returns an STM32Artefact.

    chip (a part of emc.platforms.c.budget.CHIPS) and / or ram_limit / flash_limit (bytes) are checked against
    arm-none-eabi-size's counts of the linked model when the cross compiler is installed (RAM = .data + .bss incl.
    arena and I/O buffers), else against the C platform's estimate; the report says how much of the part it uses.
    """
    toolchain.cpu_flags(cpu)
    if ignored:
        log.debug("stm32 platform: ignoring options %s", ", ".join(sorted(ignored)))
    limits = budget.resolve(chip, ram_limit, flash_limit, PLATFORM)
    files, report, program, plan = build(graph, calibration, quant_bit, input_transform, name, platform=PLATFORM,
                                         title=f"STM32 ({cpu}) int8 C")
    ident = c_identifier(name)
    sizes = toolchain.measure(files, ident, cpu) if measure and toolchain.have_cross_compiler() else None
    if sizes:
        ram, flash = sizes["ram"], sizes["flash"]
        ram_text = f"arm-none-eabi-size data+bss; arena {plan.arena_bytes:,} bytes, lower bound {plan.lower_bound:,}"
        flash_text = "arm-none-eabi-size text+data: code and constants"
    else:
        ram, ram_text = budget.ram_parts(program, plan, recurrent.static_bytes(program.steps))
        flash, flash_text = program.weight_bytes, C_FLASH_TEXT
    budget.check(limits, program, plan, ram, ram_text, flash, flash_text, PLATFORM)
    budget.add_usage(report, limits, ram, flash, flash_text)
    if sizes:
        report.totals["flash (arm-none-eabi-size: text+data)"] = sizes["flash"]
        report.totals["RAM (arm-none-eabi-size: data+bss)"] = sizes["ram"]
        report.notes.append(f"sizes of the model linked alone with --gc-sections for {cpu} (-O2), startup code and "
                            f"memcpy/memset included; RAM includes the arena and the caller's I/O buffers")
    else:
        report.totals["flash (arm-none-eabi-size)"] = "not measured"
        report.totals["RAM (arm-none-eabi-size)"] = "not measured"
        report.notes.append("arm-none-eabi-gcc not installed: flash and RAM not measured")
    files[f"emc_{ident}.mk"] = makefile_fragment(ident, files, cpu)
    files[f"emc_{ident}.cmake"] = cmake_fragment(ident, files)
    return STM32Artefact(name, files, report, program, plan, cpu, sizes)


__all__ = ["TABLE", "PLATFORM", "convert", "supported_kinds", "STM32Artefact", "toolchain"]
