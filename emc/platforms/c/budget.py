"""Chip budgets: the flash and RAM of common microcontrollers, and the check that a model fits them.

`chip=` (Python) / `--chip` (CLI) names a part of CHIPS; `ram_limit=` / `flash_limit=` give bytes directly
(and win over the chip's numbers). A model that does not fit raises PlatformLimitError naming what it needs,
what the part has, and the biggest tensors (RAM) or weights (flash) to work on; a model that fits gets report
lines saying how much of the part it uses. Sizes are the datasheets' on-chip totals (KiB); for parts whose
flash is off-chip (RP2040, ESP32-S3) the common board's / module's flash is taken, as the note says.
"""
from ...errors import PlatformLimitError

KIB = 1024
# name -> (flash bytes, RAM bytes, what it is)
CHIPS = {
    "stm32f103c8": (64 * KIB, 20 * KIB, "STM32F103C8 (Cortex-M3, 'Blue Pill')"),
    "stm32f103rb": (128 * KIB, 20 * KIB, "STM32F103RB (Cortex-M3, Nucleo-F103RB)"),
    "stm32f401re": (512 * KIB, 96 * KIB, "STM32F401RE (Cortex-M4F)"),
    "stm32f411ce": (512 * KIB, 128 * KIB, "STM32F411CE (Cortex-M4F, 'Black Pill')"),
    "stm32f411re": (512 * KIB, 128 * KIB, "STM32F411RE (Cortex-M4F, Nucleo-F411RE)"),
    "stm32f446re": (512 * KIB, 128 * KIB, "STM32F446RE (Cortex-M4F)"),
    "stm32f407vg": (1024 * KIB, 192 * KIB, "STM32F407VG (Cortex-M4F; 128 KiB SRAM + 64 KiB CCM)"),
    "stm32f746ng": (1024 * KIB, 320 * KIB, "STM32F746NG (Cortex-M7, Discovery)"),
    "stm32h743zi": (2048 * KIB, 1024 * KIB, "STM32H743ZI (Cortex-M7; SRAM in several banks, 512 KiB AXI)"),
    "stm32l476rg": (1024 * KIB, 128 * KIB, "STM32L476RG (Cortex-M4F, low power)"),
    "nrf52840": (1024 * KIB, 256 * KIB, "nRF52840 (Cortex-M4F, Arduino Nano 33 BLE)"),
    "rp2040": (2048 * KIB, 264 * KIB, "RP2040 (Cortex-M0+; flash: the Pico's 2 MiB QSPI chip)"),
    "esp32s3": (8192 * KIB, 512 * KIB, "ESP32-S3 (Xtensa LX7; flash: an 8 MiB module, internal SRAM only)"),
    "esp32": (4096 * KIB, 520 * KIB, "ESP32 (Xtensa LX6; flash: a 4 MiB module, internal SRAM only)"),
    "samd21g18": (256 * KIB, 32 * KIB, "ATSAMD21G18 (Cortex-M0+, Arduino Zero / MKR)"),
}
ALIASES = {"stm32f103": "stm32f103c8", "stm32f411": "stm32f411ce", "stm32f446": "stm32f446re",
           "stm32f746": "stm32f746ng", "stm32h743": "stm32h743zi", "stm32f407": "stm32f407vg", "pico": "rp2040",
           "esp32-s3": "esp32s3", "nrf52": "nrf52840"}
TOP = 3                 # how many of the biggest tensors / weights an error names


class Budget:
    """What a model may use: flash and RAM in bytes (None = unchecked); part = the chip's description, or None."""

    __slots__ = ("flash", "ram", "part", "explicit")

    def __init__(self, flash, ram, part=None, explicit=()):
        self.flash, self.ram, self.part, self.explicit = flash, ram, part, set(explicit)

    def label(self, what):
        """Where a limit comes from, with its size: 'STM32F103C8 (...) has 20,480 bytes' or 'ram_limit=...'."""
        value = self.ram if what == "ram" else self.flash
        if self.part is None or what in self.explicit:
            return f"{what}_limit={value:,} bytes"
        return f"the {self.part} has {value:,} bytes"

    def where(self, what):
        return "the limit" if self.part is None or what in self.explicit else self.part


def chip_names():
    return sorted(CHIPS)


def resolve(chip=None, ram_limit=None, flash_limit=None, platform="c"):
    """The Budget of these options (explicit limits win over the chip's sizes); None when none is given."""
    if chip is None and ram_limit is None and flash_limit is None:
        return None
    flash = ram = part = None
    if chip is not None:
        key = str(chip).lower().replace("_", "")
        key = ALIASES.get(key, key)
        if key not in CHIPS:
            raise PlatformLimitError(f"unknown chip '{chip}'; known chips: {', '.join(chip_names())} (or give "
                                     f"ram_limit= and flash_limit= in bytes)", platform=platform)
        flash, ram, part = CHIPS[key]
    explicit = [what for what, value in (("ram", ram_limit), ("flash", flash_limit)) if value is not None]
    return Budget(int(flash_limit) if flash_limit is not None else flash,
                  int(ram_limit) if ram_limit is not None else ram, part, explicit)


def _biggest(items):
    items = sorted(items, key=lambda kv: -kv[1])[:TOP]
    return ", ".join(f"'{name}' {size:,} B" for name, size in items)


def ram_parts(program, plan, static_bytes=0):
    """(RAM bytes, text of what they are) of a C model: arena, caller's I/O buffers, static state."""
    total = plan.arena_bytes + plan.input_bytes + plan.output_bytes + static_bytes
    text = (f"arena {plan.arena_bytes:,} bytes (live-tensor lower bound {plan.lower_bound:,}), input and output "
            f"buffers {plan.input_bytes + plan.output_bytes:,}" + (f", static state {static_bytes:,}"
                                                                  if static_bytes else ""))
    return total, text


def check(budget, program, plan, ram, ram_text, flash, flash_text, platform):
    """Raise PlatformLimitError naming needed and available bytes and the biggest contributors."""
    if budget is None:
        return
    problems = []
    if budget.ram is not None and ram > budget.ram:
        io = [(name, program.tensors[name].size) for name in list(program.inputs) + list(program.outputs)]
        tensors = _biggest([(" + ".join(b.roots), b.size) for b in plan.buffers] + io)
        problems.append(f"the model needs {ram:,} bytes of RAM ({ram_text}), more than "
                        f"{budget.label('ram')}; biggest tensors: {tensors}; use a smaller input, "
                        f"fewer channels or an earlier stride")
    if budget.flash is not None and flash > budget.flash:
        weights = _biggest((s.node, s.weight_bytes) for s in program.steps)
        problems.append(f"the model needs {flash:,} bytes of flash ({flash_text}), more than "
                        f"{budget.label('flash')}; biggest weights: {weights}; use fewer or "
                        f"smaller layers")
    if problems:
        raise PlatformLimitError(problems, platform=platform)


def add_usage(report, budget, ram, flash, flash_text, cmsis_extra=0):
    """Report lines: how much of the part's (or the limits') RAM and flash the model takes; cmsis_extra = the flash
    a CMSIS-NN build adds (widened conv weights), shown as its own line and a note when that build does not fit."""
    if budget is None:
        return
    if budget.flash is not None and cmsis_extra:
        cmsis = flash + cmsis_extra
        report.totals[f"flash of {budget.where('flash')}, CMSIS-NN build"] = (
            f"{cmsis:,} of {budget.flash:,} bytes ({100.0 * cmsis / budget.flash:.1f}%)")
        if cmsis > budget.flash:
            report.notes.append(f"a CMSIS-NN build (EMC_USE_CMSIS_NN) needs {cmsis:,} bytes of flash for its "
                                f"constants (convolution weights widened to int16), more than "
                                f"{budget.label('flash')}: build without it")
    if budget.ram is not None:
        report.totals[f"RAM of {budget.where('ram')}"] = (f"{ram:,} of {budget.ram:,} bytes "
                                                          f"({100.0 * ram / budget.ram:.1f}%)")
    if budget.flash is not None:
        report.totals[f"flash of {budget.where('flash')}"] = (f"{flash:,} of {budget.flash:,} bytes "
                                                              f"({100.0 * flash / budget.flash:.1f}%, {flash_text})")
