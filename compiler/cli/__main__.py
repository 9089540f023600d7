"""`python -m compiler.cli ...`: the `gradfuse` command without installing its script."""

import sys

from compiler.cli import main

sys.exit(main())
