"""Cortex-M builds of emc's generated C: arm-none-eabi-gcc flags per CPU, flash/RAM as arm-none-eabi-size counts
them, and semihosting test programs run under qemu-system-arm (mps2-an386, a Cortex-M4)."""
import logging
import os
import re
import shutil
import subprocess
import tempfile
from importlib import resources

import numpy as np

from ...errors import EmcError, PlatformLimitError
from ..c.build import run, write_tree

log = logging.getLogger(__name__)

CPU_FLAGS = {
    "cortex-m0": ("-mcpu=cortex-m0", "-mthumb", "-mfloat-abi=soft"),
    "cortex-m0plus": ("-mcpu=cortex-m0plus", "-mthumb", "-mfloat-abi=soft"),
    "cortex-m3": ("-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft"),
    "cortex-m4": ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
    "cortex-m7": ("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"),
    "cortex-m33": ("-mcpu=cortex-m33", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-sp-d16"),
}
COMMON_FLAGS = ("-std=c99", "-O2", "-ffunction-sections", "-fdata-sections", "-Wall", "-Wextra")
QEMU_MACHINE = "mps2-an386"
SYSTICK_HZ = 25_000_000          # mps2's CPU clock as QEMU's SysTick counts it


def cpu_flags(cpu):
    try:
        return CPU_FLAGS[cpu]
    except KeyError:
        raise EmcError(f"unknown cpu '{cpu}'; known: {', '.join(sorted(CPU_FLAGS))}") from None


def tool(name):
    """Path of an arm-none-eabi tool or qemu, or None when it is not installed."""
    return shutil.which(name)


def have_cross_compiler():
    return tool("arm-none-eabi-gcc") is not None and tool("arm-none-eabi-size") is not None


def have_qemu():
    return tool("qemu-system-arm") is not None


def template(name):
    return resources.files(__package__).joinpath("templates", name).read_text(encoding="utf-8")


def _require_cross():
    if not have_cross_compiler():
        raise EmcError("arm-none-eabi-gcc is not installed: apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi")


def size_of(elf):
    """(text, data, bss) of an ELF as arm-none-eabi-size (Berkeley format) prints them."""
    out = run([tool("arm-none-eabi-size"), elf], what="arm-none-eabi-size").stdout.splitlines()
    text, data, bss = (int(v) for v in out[1].split()[:3])
    return text, data, bss


OVERFLOW = re.compile(r"region [`'](\w+)' overflowed by (\d+) bytes")
REGION = re.compile(r"^\s*(\w+)\s*\([a-z]+\)\s*:\s*ORIGIN\s*=\s*\w+\s*,\s*LENGTH\s*=\s*(\d+)([KM]?)", re.M)


def link_overflow(output, script="mps2_an386.ld"):
    """A one-line PlatformLimitError naming the sizes for ld's 'region X overflowed' output, else None."""
    found = OVERFLOW.findall(output)
    if not found:
        return None
    lengths = {m.group(1): int(m.group(2)) * {"": 1, "K": 1 << 10, "M": 1 << 20}[m.group(3)]
               for m in REGION.finditer(template(script))}
    parts = []
    for region, over in dict(found).items():
        size = lengths.get(region)
        need = f"{size + int(over):,} bytes, {int(over):,} more than its {size:,}" if size else f"{int(over):,} bytes more"
        parts.append(f"{region} needs {need}")
    return PlatformLimitError(f"the model does not fit the Cortex-M memory map it is linked against ({script}): "
                              f"{'; '.join(parts)}; use a smaller model (fewer or narrower layers)", platform="stm32")


def measure(files, name, cpu="cortex-m4"):
    """Flash and RAM of the model as linked into a bare program that only calls <name>_run (--gc-sections).

    Returns a dict: text, data, bss, flash (= text + data) and ram (= data + bss, the caller's I/O buffers
    included); the counts include the few hundred bytes of startup code and memcpy/memset.
    """
    _require_cross()
    main = (f'#include "{name}.h"\n'
            f"static int8_t in_buf[{name.upper()}_INPUT_SIZE + 1], out_buf[{name.upper()}_OUTPUT_SIZE + 1];\n"
            f"int main(void) {{ return {name}_run(in_buf, out_buf) + out_buf[0]; }}\n")
    with tempfile.TemporaryDirectory(prefix="emc-size-") as work:
        sources = dict(files)
        sources.update({"emc_main.c": main, "startup_mps2.c": template("startup_mps2.c"),
                        "mps2_an386.ld": template("mps2_an386.ld")})
        write_tree(work, sources)
        elf = os.path.join(work, "size.elf")
        c_files = sorted(f for f in sources if f.endswith(".c"))
        run([tool("arm-none-eabi-gcc"), *COMMON_FLAGS, *cpu_flags(cpu), "-I", work, *c_files, "-T", "mps2_an386.ld",
             "-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs", "-Wl,--gc-sections", "-o", elf],
            cwd=work, what="arm-none-eabi-gcc", explain=link_overflow)
        text, data, bss = size_of(elf)
    return {"text": text, "data": data, "bss": bss, "flash": text + data, "ram": data + bss}


# ---- semihosting test programs under QEMU ----------------------------------------------------------------------------
def _c_array(ident, values):
    flat = np.asarray(values, np.int8).reshape(len(values), -1)
    rows = ["{" + ",".join(str(int(v)) for v in row) + "}" for row in flat]
    return f"static const int8_t {ident}[{flat.shape[0]}][{flat.shape[1]}] = {{\n" + ",\n".join(rows) + "\n};"


def harness(models):
    """main.c running each (name, int8 input batch, output size) and printing outputs and SysTick counts."""
    lines = ["#include <stdio.h>", "#include <stdint.h>"]
    lines += [f'#include "{name}.h"' for name, _, _ in models]
    lines += ["extern void initialise_monitor_handles(void);",
              "static volatile uint32_t emc_wraps;",
              "void SysTick_Handler(void) { ++emc_wraps; }",
              "#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)",
              "#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)",
              "#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)",
              "static uint32_t emc_ticks(void) { uint32_t w = emc_wraps, v = SYST_CVR;"
              " if (emc_wraps != w) { w = emc_wraps; v = SYST_CVR; } return w * 0x1000000u + (0xFFFFFFu - v); }"]
    for k, (name, batch, out_size) in enumerate(models):
        lines.append(_c_array(f"emc_in{k}", batch))
        lines.append(f"static int8_t emc_out{k}[{out_size} + 1];")
    lines += ["int main(void)", "{", "    int s, i;", "    uint32_t t0, t1;", "    initialise_monitor_handles();",
              "    SYST_RVR = 0xFFFFFFu; SYST_CVR = 0; SYST_CSR = 7u;   /* CPU clock, interrupt, enable */",
              "    for (i = 0; i < 100000 && SYST_CVR == 0; ++i) {}     /* wait for the first reload */"]
    for k, (name, batch, out_size) in enumerate(models):
        lines += [f"    for (s = 0; s < {len(batch)}; ++s) {{",
                  "        t0 = emc_ticks();",
                  f"        {name}_run(emc_in{k}[s], emc_out{k});",
                  "        t1 = emc_ticks();",
                  f'        printf("R {k} %d ", s);',
                  f"        for (i = 0; i < {out_size}; ++i) printf(\"%02x\", (unsigned)(uint8_t)emc_out{k}[i]);",
                  f'        printf("\\nT {k} %d %lu\\n", s, (unsigned long)(t1 - t0));',
                  "    }"]
    lines += ['    printf("DONE\\n");', "    return 0;", "}", ""]
    return "\n".join(lines)


def build_test_elf(artefacts, inputs, folder, cpu="cortex-m4"):
    """Cross-compile several models (distinct names) with a semihosting harness into folder/emc_test.elf."""
    _require_cross()
    files = {"startup_mps2.c": template("startup_mps2.c"), "mps2_an386.ld": template("mps2_an386.ld")}
    models = []
    for art, batch in zip(artefacts, inputs):
        for fname, text in art.files.items():
            if fname in files and files[fname] != text:
                raise EmcError(f"two models provide different '{fname}': give each model its own name")
            files[fname] = text
        flat = np.concatenate([np.asarray(b, np.int8).reshape(len(b), -1) for b in batch], axis=1)
        models.append((art.name, flat, art.plan.output_bytes))
    files["emc_main.c"] = harness(models)
    write_tree(folder, {k: v for k, v in files.items() if k.endswith((".c", ".h", ".ld"))})
    elf = os.path.join(folder, "emc_test.elf")
    c_files = sorted(f for f in files if f.endswith(".c"))
    run([tool("arm-none-eabi-gcc"), *COMMON_FLAGS, *cpu_flags(cpu), "-I", folder, *c_files, "-T", "mps2_an386.ld",
         "-nostartfiles", "--specs=rdimon.specs", "-Wl,--gc-sections", "-o", elf, "-lc", "-lrdimon"],
        cwd=folder, what="arm-none-eabi-gcc", explain=link_overflow)
    return elf


def run_qemu(elf, timeout=120, icount=False):
    """Run an ELF on qemu-system-arm -M mps2-an386 with semihosting; returns its standard output."""
    if not have_qemu():
        raise EmcError("qemu-system-arm is not installed: apt-get install qemu-system-arm")
    cmd = [tool("qemu-system-arm"), "-M", QEMU_MACHINE, "-nographic", "-monitor", "none", "-serial", "none",
           "-semihosting-config", "enable=on,target=native", "-kernel", elf]
    if icount:
        cmd[1:1] = ["-icount", "shift=0"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise EmcError(f"qemu did not finish {os.path.basename(elf)} within {timeout} s") from None
    if proc.returncode != 0 or "DONE" not in proc.stdout:
        raise EmcError(f"qemu run of {os.path.basename(elf)} failed (status {proc.returncode}):\n"
                       f"{proc.stderr.strip()}\n{proc.stdout[-2000:]}")
    return proc.stdout


def parse_output(text, artefacts):
    """Outputs per model (a list of int8 arrays per output, batch first) and SysTick ticks per sample."""
    raw = {}
    ticks = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == "R":
            raw.setdefault(int(parts[1]), []).append(np.frombuffer(bytes.fromhex(parts[3]), np.int8))
        elif len(parts) == 4 and parts[0] == "T":
            ticks.setdefault(int(parts[1]), []).append(int(parts[3]))
    results = []
    for k, art in enumerate(artefacts):
        flat = np.stack(raw.get(k, []))
        outs, offset = [], 0
        for t in art.output_tensors:
            outs.append(flat[:, offset:offset + t.size].reshape((len(flat),) + t.shape))
            offset += t.size
        results.append(outs)
    return results, ticks


def run_on_qemu(artefacts, inputs, folder=None, timeout=120, icount=False, cpu="cortex-m4"):
    """Cross-compile models with their int8 inputs, run under QEMU, return (outputs per model, ticks per model)."""
    with tempfile.TemporaryDirectory(prefix="emc-qemu-") as tmp:
        work = folder or tmp
        os.makedirs(work, exist_ok=True)
        elf = build_test_elf(artefacts, inputs, work, cpu=cpu)
        text = run_qemu(elf, timeout=timeout, icount=icount)
    return parse_output(text, artefacts)
