"""The frozen app's entry script: the `bastion` command, window and CLI alike.

`freeze_support()` must run first: a spawned model host re-executes this same program,
and without it the child would start a second copy of the app instead of the host.
"""

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()
    from bastion_desktop.cli import main

    sys.exit(main())
