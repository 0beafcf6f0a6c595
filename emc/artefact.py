"""What a platform returns: named output files (bytes), a report, and a simulator of the device."""
import os

from .fileio import check_not_input, write_atomic, write_folder_atomic


class Artefact:
    """Base class; platforms subclass it and implement simulate()."""

    platform = "none"

    def __init__(self, name, files, report):
        self.name = name
        self.files = dict(files)          # file name -> bytes
        self.report = report

    def save(self, path):
        """Write the files: to `path` itself when there is one file and path is not a folder, else as the folder
        `path`, swapped in whole (a reader never sees old and new files mixed). Returns the written paths."""
        path = os.fspath(path)
        check_not_input(path, getattr(self, "sources", ()))
        if len(self.files) == 1 and not os.path.isdir(path):
            write_atomic(path, next(iter(self.files.values())))
            return [path]
        return write_folder_atomic(path, self.files)

    def simulate(self, x):
        """Outputs the device would compute for x (float arrays), bit-exactly where the platform allows."""
        raise NotImplementedError

    def __repr__(self):
        sizes = ", ".join(f"{k} ({len(v):,} B)" for k, v in self.files.items())
        return f"<{type(self).__name__} {self.name} for {self.platform}: {sizes}>"
