import gc
import sys

from xdd.cli.main import main

rc = main()
# What is left is freed by the OS at exit.  Python's last collection would walk every object
# of the thousands of modules a run imports (seconds of a tiny run); frozen, it skips them.
# Objects are still released by reference counting, and every file the run writes is closed.
gc.freeze()
sys.exit(rc)
