"""spark-submit / wheel entry point for `propensity maintain`: parse arguments, call the library."""

import sys

from propensity.cli import main

if __name__ == "__main__":
    sys.exit(main(["maintain", *sys.argv[1:]]))
