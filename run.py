"""Train or evaluate MaMOL: ``python run.py with data_root=<ARROW_ROOT> remote exp_name=mamol``.

See README.md for every command. The Sacred config lives in ``config.py``; the package takes a plain dict.
"""
from __future__ import annotations

import copy

from config import ex


@ex.automain
def main(_config: dict) -> None:
    from mamol.train import run

    report = run(copy.deepcopy(dict(_config)))
    print(report["summary"], flush=True)
