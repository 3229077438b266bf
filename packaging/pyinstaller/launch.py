"""Entry point frozen by PyInstaller: the same ``merge-studio`` command as the installed script."""

from __future__ import annotations

import multiprocessing
import sys

from merge_studio.cli.main import main

if __name__ == "__main__":
    multiprocessing.freeze_support()  # DataLoader workers re-enter the frozen program
    sys.exit(main())
