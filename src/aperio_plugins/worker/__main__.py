"""`python -m aperio_plugins.worker`: serve one plugin to the host that started this process (`serve/`)."""

import sys

from .serve import main

if __name__ == "__main__":
    sys.exit(main())
