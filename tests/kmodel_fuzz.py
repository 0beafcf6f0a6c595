"""Seeded kmodel fuzzing shared by tests/test_k210_fuzz.py and bench/fuzz.py.

Each case mutates one seed file (bit flips, bytes, extreme u32s in headers / tables / body heads, truncation,
insertion, deletion, type swaps that put one layer's body under another type's code) and sends it through
emc.load_kmodel, str(model) and emc.run_kmodel on a zero input. Cases run in a worker subprocess under
RLIMIT_AS and a per-case time bound, so a runaway allocation or a hang is counted instead of taking the
machine down. Case i of a campaign depends only on (master seed, i): any case replays alone.

    python tests/kmodel_fuzz.py worker SEED_DIR MASTER START STOP [RUN_BIG]     (the worker protocol)
"""
import json
import os
import resource
import select
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

V3_CODES = list(range(1, 26)) + [10240, 10241, 10242, 10243]
V4_CODES = list(range(0, 0x15)) + [0x1001, 0x1002, 0x1003, 0x1004, 0x1005, 0x2001, 0x2002]
EXTREMES = [0, 1, 2, 3, 4, 7, 8, 15, 16, 63, 64, 255, 256, 1023, 1024, 32767, 32768, 65535, 65536, 2 ** 20,
            2 ** 23, 2 ** 24 - 1, 2 ** 31 - 16, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 16, 2 ** 32 - 1]
BIG_FILE = 100_000                       # seeds above this run only sometimes (a clean run takes 0.2-1 s)
AS_IS = -1                               # campaign(master=AS_IS): run the folder's files unmodified
OUTCOMES = ["ok", "emc errors", "other exceptions", "MemoryError", "timeouts", "crashes"]


def _u32(data, at):
    return int.from_bytes(data[at:at + 4], "little") if at + 4 <= len(data) else 0


def structure(data):
    """(format version, end of the header tables, [(table entry offset, body offset, body size)], ranges of the
    fields worth hitting with extreme values) of an intact seed, from plain integer reads."""
    entries, ranges = [], []
    if data[:4] == b"LDMK":
        constants, _, nodes, n_in, n_out = (_u32(data, 16 + 4 * k) for k in range(5))
        heads = 40 + 32 * n_in + 16 * n_out + constants
        ranges += [(0, 40 + 32 * n_in + 16 * n_out), (heads, heads + 8 * nodes)]
        version, count, pos = 4, nodes, heads + 8 * nodes
    else:
        n_out, count = _u32(data, 24), _u32(data, 12)
        heads = 28 + 8 * n_out
        ranges.append((0, heads + 8 * count))
        version, pos = 3, heads + 8 * count
    tables_end = pos
    for i in range(count):
        size = _u32(data, heads + 8 * i + 4)
        entries.append((heads + 8 * i, pos, size))
        ranges.append((pos, pos + min(size, 96)))
        if version == 3 and _u32(data, heads + 8 * i) == 10240:      # K210_CONV: layer argument, bn, act tables
            ranges += [(_u32(data, pos + 8), _u32(data, pos + 8) + 96), (_u32(data, pos + 16), _u32(data, pos + 16) + 16),
                       (_u32(data, pos + 20), _u32(data, pos + 20) + 144)]
        pos += size
    ranges = [(a, min(b, len(data))) for a, b in ranges if a < len(data) and b > a]
    return version, tables_end, entries, ranges


def mutate(data, rng, shape=None):
    """(mutated bytes, recipe text) of 1-3 random operations on data (words aligned to their structure)."""
    version, tables_end, entries, ranges = shape or structure(data)
    codes = V4_CODES if version == 4 else V3_CODES
    out, recipe = bytearray(data), []
    for _ in range(int(rng.integers(1, 4))):
        kind = rng.choice(["flip", "flip", "byte", "u32", "u32", "u32", "zero_huge", "zero_huge", "swap", "swap",
                           "truncate", "insert", "delete"])
        if not out:
            break
        a, b = ranges[int(rng.integers(len(ranges)))]
        if kind in ("u32", "zero_huge"):                             # words aligned to the structure they are in
            pos = a + 4 * int(rng.integers(max(1, (b - a) // 4)))
        elif rng.random() < 0.75 or len(data) > BIG_FILE:             # mostly where the reader's fields are
            pos = int(rng.integers(a, max(a + 1, b)))
        else:
            pos = int(rng.integers(len(out)))
        pos = min(pos, len(out) - 1)
        if kind == "swap" and entries:
            at = entries[int(rng.integers(len(entries)))][0]
            code = int(rng.choice(codes))
            out[at:at + 4] = code.to_bytes(4, "little")
            recipe.append(f"code@{at}={code}")
        elif kind == "zero_huge":                                    # a zero dimension beside huge ones
            out[pos:pos + 4] = bytes(4)
            recipe.append(f"u32@{pos}=0")
            for step in rng.choice([-3, -2, -1, 1, 2, 3], int(rng.integers(1, 3)), replace=False):
                huge, other = int(rng.choice(EXTREMES[-8:])), pos + 4 * int(step)
                if 0 <= other <= len(out) - 4:
                    out[other:other + 4] = huge.to_bytes(4, "little")
                    recipe.append(f"u32@{other}={huge}")
        elif kind == "u32" or kind == "swap":
            value = int(rng.choice(EXTREMES)) if rng.random() < 0.7 else int(rng.integers(2 ** 32))
            out[pos:pos + 4] = value.to_bytes(4, "little")
            recipe.append(f"u32@{pos}={value}")
        elif kind == "flip":
            bit = int(rng.integers(8))
            out[pos] ^= 1 << bit
            recipe.append(f"flip@{pos}.{bit}")
        elif kind == "byte":
            value = int(rng.integers(256))
            out[pos] = value
            recipe.append(f"byte@{pos}={value}")
        elif kind == "truncate":
            del out[pos:]
            recipe.append(f"truncate@{pos}")
        elif kind == "insert":
            extra = bytes(rng.integers(0, 256, int(rng.integers(1, 13)), dtype=np.uint8))
            out[pos:pos] = extra
            recipe.append(f"insert@{pos}={extra.hex()}")
        else:
            n = int(rng.integers(1, 13))
            del out[pos:pos + n]
            recipe.append(f"delete@{pos}+{n}")
    return bytes(out), " ".join(recipe)


def zero_input(model):
    """An all-zero input of the shape and type the kmodel's first layer / input 0 declares."""
    if model.version == 4:
        n, c, h, w = model.input_shapes[0]
        r = model.inputs[0]
        if r.memory_type == 2:
            return np.zeros((h, w, c) if n == 1 else (n, h, w, c), np.uint8)
        return np.zeros((n, c, h, w), np.float32 if r.datatype == 0 else np.uint8)
    first = model.layers[0] if model.layers else None
    if first is not None and first.code == 10240:
        c, h, w = first.arg.in_shape
        return np.zeros((h, w, c), np.uint8)
    if first is not None and first.code == 18:
        return np.zeros(first.body.in_channels, np.float32)
    return np.zeros(1, np.float32)


def run_case(data, run=True):
    """'ok' or 'emc errors' for one file; any other exception propagates."""
    import emc
    try:
        model = emc.load_kmodel(data)
        assert str(model)
        if run:
            emc.run_kmodel(model, zero_input(model))
    except emc.EmcError:
        return "emc errors"
    return "ok"


def read_seeds(folder):
    """{name: bytes} of the *.kmodel files in folder, in name order."""
    return {name: open(os.path.join(folder, name), "rb").read()
            for name in sorted(os.listdir(folder)) if name.endswith(".kmodel")}


def case(seeds, shapes, master, i, run_big):
    """(seed name, mutated bytes, recipe, run?) of case i; with master AS_IS, file i itself, run."""
    names = sorted(seeds)
    if master == AS_IS:
        return names[i], seeds[names[i]], "as is", True
    rng = np.random.default_rng([master, i])
    name = names[int(rng.integers(len(names)))]
    data, recipe = mutate(seeds[name], rng, shapes[name])
    return name, data, recipe, len(seeds[name]) <= BIG_FILE or rng.random() < run_big


def worker(seed_dir, master, start, stop, run_big):
    """Run cases start..stop-1, printing 'S i' before and a JSON result line after each one."""
    seeds = read_seeds(seed_dir)
    shapes = {name: structure(data) for name, data in seeds.items()}
    for i in range(start, stop):
        name, data, recipe, run = case(seeds, shapes, master, i, run_big)
        print(f"S {i}", flush=True)
        try:
            outcome, detail = run_case(data, run), ""
        except MemoryError:
            outcome, detail = "MemoryError", ""
        except Exception as err:                       # noqa: BLE001 -- the finding being counted
            outcome, detail = "other exceptions", f"{type(err).__name__}: {str(err)[:200]}"
        print(json.dumps([i, outcome, name, recipe, detail, _peak("self")]), flush=True)


def _limit_memory(limit_bytes):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
    return apply


def _peak(pid):
    """Peak resident bytes of a process (VmHWM: unlike ru_maxrss, not inherited from the parent across exec)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))
    except (OSError, StopIteration):
        return 0


def campaign(seed_dir, cases, master=0, start=0, run_big=0.02, case_seconds=10.0, memory_bytes=2 << 30,
             progress=None):
    """Run cases [start, start+cases) in worker subprocesses; returns {'counts', 'findings', 'peak_rss'}.

    A worker that overruns case_seconds is killed (a timeout), one that dies is a crash; either way a fresh
    worker continues with the next case. findings: [(case, outcome, seed, recipe, detail)] of every case
    after "emc errors" in OUTCOMES."""
    counts = dict.fromkeys(OUTCOMES, 0)
    findings, peak = [], 0
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(os.path.abspath(__file__)))] + sys.path))
    i, stop = start, start + cases
    while i < stop:
        with tempfile.TemporaryFile("w+") as errors:
            proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "worker", seed_dir, str(master),
                                     str(i), str(stop), str(run_big)], stdout=subprocess.PIPE, stderr=errors,
                                    env=env, text=True, preexec_fn=_limit_memory(memory_bytes))
            current, started, killed = None, time.monotonic(), False
            while True:
                ready, _, _ = select.select([proc.stdout], [], [], 0.5)
                if ready:
                    line = proc.stdout.readline()
                    if not line:
                        break
                    if line.startswith("S "):
                        current, started = int(line.split()[1]), time.monotonic()
                        continue
                    index, outcome, name, recipe, detail, rss = json.loads(line)
                    counts[outcome] += 1
                    peak = max(peak, rss)
                    if outcome not in ("ok", "emc errors"):
                        findings.append((index, outcome, name, recipe, detail))
                    current, i = None, index + 1
                    if progress:
                        progress(i - start, counts)
                elif current is not None and time.monotonic() - started > case_seconds:
                    peak = max(peak, _peak(proc.pid))
                    proc.send_signal(signal.SIGKILL)
                    killed = True
                    break
            proc.stdout.close()
            code = proc.wait()
            if current is None and code != 0:
                errors.seek(0)
                raise RuntimeError(f"the fuzz worker failed before its first case (exit {code}):\n{errors.read()}")
        if current is not None:
            outcome = "timeouts" if killed else "crashes"
            counts[outcome] += 1
            findings.append(_finding(seed_dir, master, current, run_big, outcome,
                                     f"> {case_seconds} s" if killed else f"exit code {code}"))
            i = current + 1
    return {"counts": counts, "findings": findings, "peak_rss": peak}


def check_files(files, folder, case_seconds=10.0, memory_bytes=2 << 30):
    """Run {name: bytes} unmodified through the worker (load, print, run under the limits); the campaign result."""
    os.makedirs(folder, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
    return campaign(folder, len(files), master=AS_IS, case_seconds=case_seconds, memory_bytes=memory_bytes)


def _finding(seed_dir, master, index, run_big, outcome, detail):
    seeds = read_seeds(seed_dir)
    name, _, recipe, _ = case(seeds, {n: structure(d) for n, d in seeds.items()}, master, index, run_big)
    return index, outcome, name, recipe, detail


def replay(seed_dir, master, index, run_big=0.02):
    """(seed name, mutated bytes, recipe, run?) of one case, to reproduce a finding in a debugger."""
    seeds = read_seeds(seed_dir)
    return case(seeds, {n: structure(d) for n, d in seeds.items()}, master, index, run_big)


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]),
           float(sys.argv[6]) if len(sys.argv) > 6 else 0.02)
