"""`python -m emc ...` runs the same command line as the `emc` console script."""
import sys

from .cli import main

sys.exit(main())
