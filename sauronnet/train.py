"""``python -m sauronnet.train TASK FOLD ...``: ``sauron_train`` as a module, the form torchrun launches
(``torchrun --nproc_per_node N -m sauronnet.train TASK FOLD``)."""
from __future__ import annotations

import sys

from sauronnet.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
