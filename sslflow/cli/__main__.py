"""``python -m sslflow.cli``: the ``sslflow`` command."""

import sys

from sslflow.cli.main import main

sys.exit(main())
