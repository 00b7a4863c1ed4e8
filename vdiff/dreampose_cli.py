"""`python -m vdiff.dreampose_cli`: DreamPose's animate command (`vdiff.methods.dreampose.cli`)."""

import sys

from vdiff.methods.dreampose.cli import main, run

__all__ = ["main", "run"]

if __name__ == "__main__":
    sys.exit(main())
