"""A pytest plugin that records the SHA-256 of every kmodel the test suite writes, to prove a refactor
changes no byte: run the suite before and after with

    EMC_DIGESTS=before.txt PYTHONPATH=bench python -m pytest -q tests -p kmodel_digests
    EMC_DIGESTS=after.txt  PYTHONPATH=bench python -m pytest -q tests -p kmodel_digests
    python bench/kmodel_digests.py before.txt after.txt

Each line is `test id, n-th kmodel of that test, version, sha256`. With EMC_KMODEL_DIR set, every distinct kmodel
is also saved there as v<version>_<sha256 prefix>.kmodel, to run through other executors (Kendryte's kpu.c, nncase).
"""
import hashlib
import importlib
import os
import sys

# Where the writers live, newest layout first (the K210 package moved them into v3/ and v4/).
WRITERS = [("emc.platforms.k210.v3.writer", "KModelV3Writer", 3), ("emc.platforms.k210.v4.writer", "KModelV4Writer", 4),
           ("emc.platforms.k210.writer_v3", "KModelV3Writer", 3), ("emc.platforms.k210.writer_v4", "KModelV4Writer", 4)]
_current = {"test": "-", "count": 0}
_lines = []


def _wrap(cls, version):
    original = cls.to_bytes

    def to_bytes(self, *args, **kwargs):
        data = original(self, *args, **kwargs)
        _current["count"] += 1
        digest = hashlib.sha256(data).hexdigest()
        _lines.append(f"{_current['test']}\t{_current['count']}\tv{version}\t{digest}")
        folder = os.environ.get("EMC_KMODEL_DIR")
        if folder:
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, f"v{version}_{digest[:16]}.kmodel"), "wb") as f:
                f.write(data)
        return data

    cls.to_bytes = to_bytes


def pytest_configure(config):
    done = set()
    for module, name, version in WRITERS:
        if version in done:
            continue
        try:
            _wrap(getattr(importlib.import_module(module), name), version)
            done.add(version)
        except ImportError:
            continue


def pytest_runtest_setup(item):
    _current["test"], _current["count"] = item.nodeid, 0


def pytest_unconfigure(config):
    with open(os.environ.get("EMC_DIGESTS", "kmodel_digests.txt"), "w") as f:
        f.write("\n".join(sorted(_lines)) + "\n")


def compare(before, after):
    """Print how many recorded kmodels are identical; exit 1 on any difference or a missing one."""
    read = lambda p: dict(l.rsplit("\t", 1) for l in open(p).read().splitlines() if l)  # noqa: E731
    a, b = read(before), read(after)
    same = sum(a[k] == b.get(k) for k in a)
    print(f"{same} of {len(a)} kmodels byte-identical; {len(set(b) - set(a))} new, {len(set(a) - set(b))} missing")
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            print("  differs:", k)
    return 0 if same == len(a) == len(b) else 1


if __name__ == "__main__":
    sys.exit(compare(*sys.argv[1:3]))
