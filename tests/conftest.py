"""Shared test helpers: where the independent reference artefacts live."""
import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
# EMC_REFERENCE points elsewhere (a worktree whose ../shared is not the shared folder); CI uses ../shared.
REFERENCE = pathlib.Path(os.environ.get("EMC_REFERENCE") or REPO / ".." / "shared" / "reference").resolve()


def reference_path(*parts):
    """Path under ../shared/reference, skipping the test with a reason when that folder is absent."""
    if not REFERENCE.is_dir():
        pytest.skip(f"../shared/reference not found at {REFERENCE}: the independent reference artefacts are absent")
    path = REFERENCE.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference file {path} is absent")
    return path


@pytest.fixture
def reference():
    """The reference folder as a pathlib.Path (skips when absent)."""
    return reference_path()
