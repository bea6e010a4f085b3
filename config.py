"""The Sacred experiment and every configuration of mamol, as DCP/MMP users expect them at the top level.

They are defined in the package (:mod:`mamol.experiment`, where each key's meaning is written), so that the
installed package works without this checkout; ``python run.py print_config`` lists every key.
"""
from mamol.experiment import defaults, ex, parse_command_line, root_config

__all__ = ["defaults", "ex", "parse_command_line", "root_config"]
