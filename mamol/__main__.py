"""``python -m mamol with ...``: the same program as ``run.py`` in the repository (see :mod:`mamol.commands`)."""
import sys

from mamol.commands import command_line

if __name__ == "__main__":
    sys.exit(command_line(sys.argv))
