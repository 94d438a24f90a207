"""`python -m bastion_desktop`: the same entry point as the `bastion` command."""

import multiprocessing
import sys

from bastion_desktop.cli import main

if __name__ == "__main__":
    # A frozen (PyInstaller) build re-executes itself for spawned model hosts.
    multiprocessing.freeze_support()
    sys.exit(main())
