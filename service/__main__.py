"""``python -m service``: the ``intygstjanst`` command (``service/cli.py``), for where no console script
is installed."""

import sys

from service.cli import main

sys.exit(main())
