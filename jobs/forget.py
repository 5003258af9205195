"""spark-submit / wheel entry point for `propensity forget`: parse arguments, call the library."""

import sys

from propensity.cli import main

if __name__ == "__main__":
    sys.exit(main(["forget", *sys.argv[1:]]))
