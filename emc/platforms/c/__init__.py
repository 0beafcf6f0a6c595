"""The generic C platform: graph -> int8 C99 sources (model .h/.c plus emc's kernel library).

TABLE (graph op kind -> handler) is the source of the supported-layers list; check(graph, calibration) lists
every problem before anything is written; convert() returns a CArtefact whose simulate() is the Python twin
of the C's integer arithmetic and whose compile()/predict() run the real C through the host compiler.
"""
import logging

from ...errors import PlatformLimitError
from .artefact import CArtefact, build_report
from .cmsis import widened_weight_bytes
from .build import runtime_files
from .codegen import Generator, c_identifier
from .ir import Program
from .lower import Lowering
from .planner import plan_memory, route_outputs
from .table import TABLE, supported_kinds
from . import budget, recurrent       # recurrent registers its ops in TABLE, KERNELS and EMITTERS

log = logging.getLogger(__name__)
PLATFORM = "c"


def lower(graph, calibration, input_transform=None, platform=PLATFORM):
    """Quantise and lower the optimized graph: (Program, notes); raises PlatformLimitError listing every problem."""
    low = Lowering(graph, calibration, TABLE, input_transform).run()
    if low.problems:
        raise PlatformLimitError(low.problems, platform=platform)
    steps = list(low.steps)
    tensors = dict(low.tensors)
    outputs = route_outputs(steps, tensors, graph.inputs, graph.outputs)
    return Program(steps, tensors, graph.inputs, outputs), low.notes


C_FLASH_TEXT = "constant weights and tables; kernel code not counted: the stm32 platform measures it"


def build(graph, calibration, quant_bit=8, input_transform=None, name="model", ram_limit=None, flash_limit=None,
          platform=PLATFORM, title="int8 C", chip=None):
    """Lower, plan and generate: (files, report, program, plan) -- shared by the c and stm32 platforms.

    chip / ram_limit / flash_limit: the budget (see budget.py) checked against the estimate here: RAM = arena +
    the caller's input and output buffers + static recurrent state, flash = constant data. The stm32 platform
    passes none and checks its measured sizes itself."""
    if quant_bit != 8:
        raise PlatformLimitError([f"quant_bit={quant_bit}: the C kernels are int8; use quant_bit=8"], platform=platform)
    limits = budget.resolve(chip, ram_limit, flash_limit, platform)
    program, notes = lower(graph, calibration, input_transform, platform)
    plan = plan_memory(program.steps, program.tensors, program.inputs, program.outputs)
    ram, ram_text = budget.ram_parts(program, plan, recurrent.static_bytes(program.steps))
    budget.check(limits, program, plan, ram, ram_text, program.weight_bytes, C_FLASH_TEXT, platform)
    ident = c_identifier(name)
    files = Generator(ident, program, plan).generate()
    files.update(runtime_files())
    report = build_report(f"{title} model '{ident}'", program, plan, notes)
    budget.add_usage(report, limits, ram, program.weight_bytes, C_FLASH_TEXT, widened_weight_bytes(program.steps))
    return files, report, program, plan


def convert(graph, calibration, quant_bit=8, input_transform=None, name="model", ram_limit=None, flash_limit=None,
            chip=None, **ignored):
    """Generate the int8 C deployment of an optimized, calibrated graph; returns a CArtefact.

    chip (a name of budget.CHIPS, e.g. 'stm32f411ce') and / or ram_limit / flash_limit (bytes): raise
    PlatformLimitError when RAM (arena + I/O buffers + recurrent state) or the constant data exceed them; the
    report says how much of the part the model uses.
    The entry point is `int <name>_run(const int8_t *in, int8_t *out)`; several inputs (outputs) are laid
    back to back in graph order in `in` (`out`), at the <NAME>_INPUTi_OFFSET (OUTPUTi_OFFSET) defines;
    `int <name>_run_buffers(const int8_t *const *inputs, int8_t *const *outputs)` takes a buffer per input / output.
    """
    if ignored:
        log.debug("c platform: ignoring options %s", ", ".join(sorted(ignored)))
    files, report, program, plan = build(graph, calibration, quant_bit, input_transform, name, ram_limit,
                                         flash_limit, chip=chip)
    return CArtefact(name, files, report, program, plan)


def check(graph, calibration):
    """Every problem the C platform has with this optimized graph and calibration; [] when it converts."""
    try:
        lower(graph, calibration)
    except PlatformLimitError as err:
        return list(err.problems)
    return []


__all__ = ["TABLE", "PLATFORM", "convert", "check", "build", "lower", "supported_kinds", "CArtefact"]
