"""Every error emc raises on bad input derives from EmcError, so callers can catch one class."""


class EmcError(Exception):
    """Base class of all emc errors: the message names the cause and the fix."""


class UnsupportedLayerError(EmcError):
    """A framework layer, or a graph op on a platform, that emc cannot convert."""


class ModelLoadError(EmcError):
    """A model file or object that cannot be read (missing file, unknown format, dynamic shape)."""


class GraphError(EmcError):
    """An inconsistent graph: unknown tensor, cycle, shape mismatch, NaN/inf weights."""


class DatasetError(EmcError):
    """A calibration dataset that is empty, unreadable or does not fit the model input."""


class QuantizationError(EmcError):
    """A calibration or quantization function that cannot produce a valid range."""


class PlatformLimitError(EmcError):
    """The model exceeds what the target platform can run (one or more problems, all listed)."""

    def __init__(self, problems, platform=""):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        head = f"{platform}: " if platform else ""
        if len(self.problems) == 1:
            msg = head + self.problems[0]
        else:
            msg = head + f"{len(self.problems)} problems:\n" + "\n".join("  - " + p for p in self.problems)
        super().__init__(msg)


class KModelFormatError(EmcError):
    """A truncated or corrupted kmodel: the message names the offset and the field."""

    def __init__(self, message, offset=None, field=None):
        self.offset = offset
        self.field = field
        where = []
        if field is not None:
            where.append(f"field {field}")
        if offset is not None:
            where.append(f"offset {offset}")
        super().__init__(message + (f" ({', '.join(where)})" if where else ""))
