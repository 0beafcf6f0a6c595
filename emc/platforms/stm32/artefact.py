"""What the STM32 platform returns: the C platform's artefact plus build fragments, Cortex-M sizes and QEMU runs."""
from ..c.artefact import CArtefact
from . import toolchain


class STM32Artefact(CArtefact):
    """Generated C for Cortex-M (kernels call CMSIS-NN under EMC_USE_CMSIS_NN), a Makefile and a CMake fragment,
    .sizes (arm-none-eabi-size counts, or None), and .run_qemu(q) on an emulated Cortex-M4."""

    platform = "stm32"

    def __init__(self, name, files, report, program, plan, cpu, sizes):
        super().__init__(name, files, report, program, plan)
        self.cpu = cpu
        self.sizes = sizes

    def run_qemu(self, q, timeout=120, folder=None):
        """int8 outputs of the model cross-compiled for a Cortex-M4 and run under qemu-system-arm (mps2-an386)."""
        outputs, _ = toolchain.run_on_qemu([self], [self._batched(q, "int8")], folder=folder, timeout=timeout)
        return outputs[0]
