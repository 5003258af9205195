"""``python -m propensity``: the same CLI as the ``propensity`` console script."""

import sys

from propensity.cli import main

sys.exit(main())
