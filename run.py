"""Train or evaluate: ``python run.py with data_root=<ARROW_ROOT> remote exp_name=mamol`` (DCP's command line).

Also ``evaluate_grid``, ``sweep``, ``report`` and ``predict_map``; ``python run.py print_config`` lists every
key. The commands live in :mod:`mamol.commands` (``python -m mamol`` is the same program).
"""
import sys

from mamol.commands import command_line, ex

__all__ = ["command_line", "ex"]

if __name__ == "__main__":
    sys.exit(command_line(sys.argv))
