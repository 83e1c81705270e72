"""`python -m claygraph COMMAND ...`: the same as the `claygraph` script."""
import sys

from claygraph.cli.main import main

sys.exit(main())
