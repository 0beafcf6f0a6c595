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


def _extra_flags(defines, includes):
    return [f"-D{d}" for d in defines] + [f"-I{os.path.abspath(d)}" for d in includes]


def measure(files, name, cpu="cortex-m4", defines=(), sources=(), includes=()):
    """Flash and RAM of the model as linked into a bare program that only calls <name>_run (--gc-sections).

    Returns a dict: text, data, bss, flash (= text + data) and ram (= data + bss, the caller's I/O buffers
    included); the counts include the few hundred bytes of startup code and memcpy/memset. defines / sources /
    includes: extra -D macros, C files and include folders (e.g. EMC_USE_CMSIS_NN and a CMSIS-NN checkout).
    """
    _require_cross()
    main = (f'#include "{name}.h"\n'
            f"static int8_t in_buf[{name.upper()}_INPUT_SIZE + 1], out_buf[{name.upper()}_OUTPUT_SIZE + 1];\n"
            f"int main(void) {{ return {name}_run(in_buf, out_buf) + out_buf[0]; }}\n")
    with tempfile.TemporaryDirectory(prefix="emc-size-") as work:
        tree = dict(files)
        tree.update({"emc_main.c": main, "startup_mps2.c": template("startup_mps2.c"),
                     "mps2_an386.ld": template("mps2_an386.ld")})
        write_tree(work, tree)
        elf = os.path.join(work, "size.elf")
        c_files = sorted(f for f in tree if f.endswith(".c"))
        run([tool("arm-none-eabi-gcc"), *COMMON_FLAGS, *cpu_flags(cpu), *_extra_flags(defines, includes), "-I", work,
             *c_files, *[os.path.abspath(f) for f in sources], "-T", "mps2_an386.ld", "-nostartfiles",
             "--specs=nano.specs", "--specs=nosys.specs", "-Wl,--gc-sections", "-o", elf],
            cwd=work, what="arm-none-eabi-gcc", explain=link_overflow)
        text, data, bss = size_of(elf)
    return {"text": text, "data": data, "bss": bss, "flash": text + data, "ram": data + bss}


# ---- semihosting test programs under QEMU ----------------------------------------------------------------------------
def _c_array(ident, values):
    flat = np.asarray(values, np.int8).reshape(len(values), -1)
    rows = ["{" + ",".join(str(int(v)) for v in row) + "}" for row in flat]
    return f"static const int8_t {ident}[{flat.shape[0]}][{flat.shape[1]}] = {{\n" + ",\n".join(rows) + "\n};"


STACK_PROBE = 16384              # bytes below main's stack pointer painted to find a run's deepest stack use
STACK_MARGIN = 32                # bytes right below it left unpainted: emc_paint's frame
STACK_PAINT = "0xE3C5A5E3u"


def harness(models, profile=False):
    """main.c running each (name, int8 input batch, output size, kernel calls) and printing outputs, SysTick counts and the
    stack one run uses; with profile, also the SysTick count at every EMC_MARK of the generated model."""
    lines = ["#include <stdio.h>", "#include <stdint.h>"]
    lines += [f'#include "{m[0]}.h"' for m in models]
    lines += ["extern void initialise_monitor_handles(void);",
              "static volatile uint32_t emc_wraps;",
              "void SysTick_Handler(void) { ++emc_wraps; }",
              "#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)",
              "#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)",
              "#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)",
              "static uint32_t emc_ticks(void) { uint32_t w = emc_wraps, v = SYST_CVR;"
              " if (emc_wraps != w) { w = emc_wraps; v = SYST_CVR; } return w * 0x1000000u + (0xFFFFFFu - v); }",
              "/* paint the stack below main's sp; after a run, the bytes from the deepest changed word up to sp */",
              "static inline __attribute__((always_inline)) uint32_t emc_sp(void)"
              " { uint32_t sp; __asm__ volatile(\"mov %0, sp\" : \"=r\"(sp)); return sp; }",
              "static void __attribute__((noinline)) emc_paint(uint32_t *lo, uint32_t *hi)"
              f" {{ while (lo < hi) *lo++ = {STACK_PAINT}; }}",
              "static uint32_t emc_used(uint32_t *lo, uint32_t *hi, uint32_t top)"
              f" {{ while (lo < hi && *lo == {STACK_PAINT}) ++lo; return top - (uint32_t)lo; }}"]
    if profile:
        steps = max(m[3] for m in models)
        lines += [f"static uint32_t emc_marks[{steps + 1}];",
                  "void emc_profile(int32_t k) { emc_marks[k + 1] = emc_ticks(); }"]
    for k, (name, batch, out_size, _) in enumerate(models):
        lines.append(_c_array(f"emc_in{k}", batch))
        lines.append(f"static int8_t emc_out{k}[{out_size} + 1];")
    lines += ["int main(void)", "{", "    int s, i;", "    uint32_t t0, t1, top, used, *lo, *hi;",
              "    initialise_monitor_handles();",
              "    SYST_RVR = 0xFFFFFFu; SYST_CVR = 0; SYST_CSR = 7u;   /* CPU clock, interrupt, enable */",
              "    for (i = 0; i < 100000 && SYST_CVR == 0; ++i) {}     /* wait for the first reload */",
              f"    top = emc_sp(); lo = (uint32_t *)((top - {STACK_PROBE}u) & ~3u);",
              f"    hi = (uint32_t *)((top - {STACK_MARGIN}u) & ~3u);   /* room for emc_paint's own frame */"]
    for k, (name, batch, out_size, steps) in enumerate(models):
        lines += [f"    for (s = 0; s < {len(batch)}; ++s) {{",
                  "        emc_paint(lo, hi);",
                  "        t0 = emc_ticks();",
                  f"        {name}_run(emc_in{k}[s], emc_out{k});",
                  "        t1 = emc_ticks();",
                  "        used = emc_used(lo, hi, top);           /* before printf uses the stack */",
                  f'        printf("R {k} %d ", s);',
                  f"        for (i = 0; i < {out_size}; ++i) printf(\"%02x\", (unsigned)(uint8_t)emc_out{k}[i]);",
                  f'        printf("\\nT {k} %d %lu\\n", s, (unsigned long)(t1 - t0));',
                  f'        printf("S {k} %d %lu\\n", s, (unsigned long)used);']
        if profile:
            lines += [f'        printf("P {k} %d", s);',
                      f"        for (i = 1; i <= {steps}; ++i) "
                      "printf(\" %lu\", (unsigned long)(emc_marks[i] - emc_marks[i - 1]));",
                      '        printf("\\n");']
        lines.append("    }")
    lines.append("#ifdef EMC_USE_CMSIS_NN")
    lines += [f'    printf("C {k} %ld %ld\\n", (long){m[0]}_cmsis_scratch_bytes(), '
              f"(long){m[0].upper()}_CMSIS_SCRATCH_SIZE);" for k, m in enumerate(models)]
    lines.append("#endif")
    lines += ['    printf("DONE\\n");', "    return 0;", "}", ""]
    return "\n".join(lines)


def build_test_elf(artefacts, inputs, folder, cpu="cortex-m4", profile=False, defines=(), sources=(), includes=()):
    """Cross-compile several models (distinct names) with a semihosting harness into folder/emc_test.elf.

    defines: extra -D macros (e.g. EMC_USE_CMSIS_NN); sources / includes: extra C files and include folders
    (a CMSIS-NN checkout); profile: per-kernel SysTick marks (EMC_PROFILE_HOOK)."""
    _require_cross()
    files = {"startup_mps2.c": template("startup_mps2.c"), "mps2_an386.ld": template("mps2_an386.ld")}
    models = []
    for art, batch in zip(artefacts, inputs):
        for fname, text in art.files.items():
            if fname in files and files[fname] != text:
                raise EmcError(f"two models provide different '{fname}': give each model its own name")
            files[fname] = text
        flat = np.concatenate([np.asarray(b, np.int8).reshape(len(b), -1) for b in batch], axis=1)
        models.append((art.name, flat, art.plan.output_bytes, len(art.program.steps)))
    files["emc_main.c"] = harness(models, profile)
    write_tree(folder, {k: v for k, v in files.items() if k.endswith((".c", ".h", ".ld"))})
    elf = os.path.join(folder, "emc_test.elf")
    c_files = sorted(f for f in files if f.endswith(".c"))
    flags = _extra_flags(tuple(defines) + (("EMC_PROFILE_HOOK=emc_profile",) if profile else ()), includes)
    run([tool("arm-none-eabi-gcc"), *COMMON_FLAGS, *cpu_flags(cpu), *flags, "-I", folder, *c_files,
         *[os.path.abspath(f) for f in sources], "-T", "mps2_an386.ld", "-nostartfiles", "--specs=rdimon.specs",
         "-Wl,--gc-sections", "-o", elf, "-lc", "-lrdimon"], cwd=folder, what="arm-none-eabi-gcc",
        explain=link_overflow)
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


TICK_INSTRUCTIONS = 40           # with -icount shift=0 QEMU runs one instruction per ns; SysTick counts at 25 MHz


def measure_on_qemu(artefacts, inputs, timeout=600, cpu="cortex-m4", profile=True, **build):
    """Run models under QEMU with -icount shift=0; per model a dict: outputs, instructions per sample, stack bytes
    per sample, with profile instructions per kernel call of the first sample (+-40 each), and for CMSIS-NN
    builds cmsis_scratch = (what CMSIS-NN's *_get_buffer_size ask on the core, the scratch emc reserved).

    build: defines / sources / includes as build_test_elf takes them."""
    with tempfile.TemporaryDirectory(prefix="emc-qemu-") as work:
        elf = build_test_elf(artefacts, inputs, work, cpu=cpu, profile=profile, **build)
        text = run_qemu(elf, timeout=timeout, icount=True)
        text_size = size_of(elf)[0]
    outputs, ticks = parse_output(text, artefacts)
    stack, steps, scratch = {}, {}, {}
    for line in text.splitlines():
        parts = line.split()
        if parts[:1] == ["S"] and len(parts) == 4:
            stack.setdefault(int(parts[1]), []).append(int(parts[3]))
        elif parts[:1] == ["P"] and int(parts[2]) == 0:
            steps[int(parts[1])] = [int(v) * TICK_INSTRUCTIONS for v in parts[3:]]
        elif parts[:1] == ["C"] and len(parts) == 4:
            scratch[int(parts[1])] = (int(parts[2]), int(parts[3]))
    return [{"outputs": outputs[k], "instructions": [t * TICK_INSTRUCTIONS for t in ticks.get(k, [])],
             "stack": stack.get(k, []), "steps": steps.get(k), "elf_text": text_size,
             "cmsis_scratch": scratch.get(k)}
            for k in range(len(artefacts))]


def cmsis_nn_build(root):
    """Build options (defines, sources, includes) for emc's CMSIS-NN kernels from a CMSIS-NN source checkout:
    its s8/s16 integer sources (float ones and the Python bindings left out) and Include/."""
    root = os.path.abspath(root)
    include = os.path.join(root, "Include")
    if not os.path.isfile(os.path.join(include, "arm_nnfunctions.h")):
        raise EmcError(f"{root} is not a CMSIS-NN checkout (no Include/arm_nnfunctions.h)")
    sources = []
    for folder, dirs, names in os.walk(os.path.join(root, "Source")):
        dirs[:] = sorted(d for d in dirs if d != "Bindings")
        sources += [os.path.join(folder, n) for n in sorted(names)
                    if n.endswith(".c") and not n.endswith(("_f16.c", "_f32.c", "_flt.c"))]
    return {"defines": ("EMC_USE_CMSIS_NN",), "sources": sources, "includes": (include,)}
