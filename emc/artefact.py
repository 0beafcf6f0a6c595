"""What a platform returns: named output files (bytes), a report, and a simulator of the device."""
import os

from .fileio import write_atomic


class Artefact:
    """Base class; platforms subclass it and implement simulate()."""

    platform = "none"

    def __init__(self, name, files, report):
        self.name = name
        self.files = dict(files)          # file name -> bytes
        self.report = report

    def save(self, path):
        """Write the files: to `path` itself when there is one file and path is not a folder, else into it."""
        path = os.fspath(path)
        if len(self.files) == 1 and not os.path.isdir(path):
            write_atomic(path, next(iter(self.files.values())))
            return [path]
        written = []
        for fname, data in self.files.items():
            target = os.path.join(path, fname)
            write_atomic(target, data)
            written.append(target)
        return written

    def simulate(self, x):
        """Outputs the device would compute for x (float arrays), bit-exactly where the platform allows."""
        raise NotImplementedError

    def __repr__(self):
        sizes = ", ".join(f"{k} ({len(v):,} B)" for k, v in self.files.items())
        return f"<{type(self).__name__} {self.name} for {self.platform}: {sizes}>"
