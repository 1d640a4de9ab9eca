"""``python -m nnseg`` (and ``torchrun -m nnseg``) run the CLI."""

import sys

from nnseg.cli import main

sys.exit(main())
