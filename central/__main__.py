"""`torchrun --nproc-per-node W -m central --out RUN_DIR [options]`: one worker.

An entry point, not library code: it hands over to `fedtype central` in worker
mode, whose options it takes (see `fedtype central --help`).
"""

import sys

from cli.central_cmd import torchrun_main

sys.exit(torchrun_main())
