"""Long fuzz campaigns over kmodel v3 and v4 (issue 15): python bench/fuzz.py --cases 50000 [--jobs 2].

Mutates the shared reference kmodels and two files emc writes (tests/kmodel_fuzz.py has the mutations and
the worker), runs each case through load_kmodel, str(model) and run_kmodel under an address-space limit and
a per-case time bound, and prints per format: tried, ok, emc errors, other exceptions, MemoryError, timeouts,
crashes, peak RSS -- then every finding with the case number that replays it.
"""
import argparse
import concurrent.futures
import os
import pathlib
import shutil
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import kmodel_fuzz  # noqa: E402


def seed_folders(work, reference, with_emc):
    """{version: folder} with the reference kmodels (and emc's own) of each format."""
    folders = {}
    for version in (3, 4):
        folder = work / f"v{version}"
        folder.mkdir()
        for path in sorted((reference / f"kmodel-v{version}").glob("*.kmodel")):
            shutil.copyfile(path, folder / path.name)
        if with_emc:
            from test_k210_fuzz import emc_written
            (folder / f"emc_written_v{version}.kmodel").write_bytes(emc_written(version))
        if any(folder.iterdir()):
            folders[version] = folder
    return folders


def run_format(folder, args, master):
    """One format's campaign, split over args.jobs worker chains; the merged result."""
    per_job = -(-args.cases // args.jobs)
    ranges = [(start, min(per_job, args.cases - start)) for start in range(0, args.cases, per_job)]
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        parts = list(pool.map(lambda r: kmodel_fuzz.campaign(
            str(folder), r[1], master=master, start=r[0], run_big=args.run_big, case_seconds=args.case_seconds,
            memory_bytes=int(args.memory_gb * (1 << 30))), ranges))
    counts = {k: sum(p["counts"][k] for p in parts) for k in kmodel_fuzz.OUTCOMES}
    return {"counts": counts, "findings": [f for p in parts for f in p["findings"]],
            "peak_rss": max(p["peak_rss"] for p in parts)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=50000, help="mutations per format (default 50000)")
    parser.add_argument("--seed", type=int, default=0, help="master seed; case i of format v uses (seed+v, i)")
    parser.add_argument("--jobs", type=int, default=1, help="parallel workers per format")
    parser.add_argument("--run-big", type=float, default=0.05,
                        help="share of cases of the big seeds (> 100 kB) that run, not only load (default 0.05)")
    parser.add_argument("--case-seconds", type=float, default=20.0, help="time bound per case (default 20)")
    parser.add_argument("--memory-gb", type=float, default=2.0, help="address-space limit per worker (default 2)")
    parser.add_argument("--reference", type=pathlib.Path, default=ROOT.parent / "shared" / "reference")
    parser.add_argument("--no-emc-seeds", action="store_true", help="skip the files emc writes (needs no Keras)")
    args = parser.parse_args()
    if args.cases < 1 or args.jobs < 1:
        parser.error("--cases and --jobs must be at least 1")
    with tempfile.TemporaryDirectory(prefix="emc-fuzz-") as work:
        folders = seed_folders(pathlib.Path(work), args.reference.resolve(), not args.no_emc_seeds)
        if not folders:
            parser.error(f"no kmodels under {args.reference}/kmodel-v3 or kmodel-v4")
        header = ["format", "seeds", "tried"] + kmodel_fuzz.OUTCOMES + ["peak RSS", "seconds"]
        rows, findings = [], []
        for version, folder in folders.items():
            start = time.perf_counter()
            result = run_format(folder, args, args.seed + version)
            c = result["counts"]
            rows.append([f"v{version}", len(list(folder.iterdir())), sum(c.values())]
                        + [c[k] for k in kmodel_fuzz.OUTCOMES]
                        + [f"{result['peak_rss'] / 2 ** 20:.0f} MiB", f"{time.perf_counter() - start:.0f}"])
            findings += [(version, *f) for f in result["findings"]]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in [header] + rows:
        print("  ".join(str(x).rjust(w) for x, w in zip(row, widths)))
    for version, i, outcome, name, recipe, detail in findings:
        print(f"v{version} case {i} (seed {args.seed + version}): {outcome} on {name} [{recipe}] {detail}")
    return 1 if findings else 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
