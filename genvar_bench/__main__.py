"""`python -m genvar_bench`: the command line (`genvar_bench.cli`)."""
import sys

from genvar_bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
