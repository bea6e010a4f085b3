"""The paper's experiment protocol (SPEC §8): what the ``run.py`` commands beyond training do.

One concept per module (run folders and what a run records are :mod:`mamol.runs`, below training):
``predict`` (a checkpoint's model loaded once, predicting loaders on the run's device and precision),
``grid`` (``evaluate_grid``: every missing type × ratio), ``maps`` (``predict_map``: classification maps of a
remote scene), ``sweep`` (``sweep``: seeds × methods × datasets × training missing settings), ``records``
(finished runs as a report reads them: statistics over seeds, groups), ``report`` (``report``: mean ± std tables
and plots), ``paper`` (the paper tables: settings shown, names, best marked, captions, labels),
``hyperparameters`` (the keys runs share or differ in), ``tables`` (Markdown / CSV / LaTeX writers) and ``plots``
(matplotlib figures). These modules import ``mamol.train``, never the reverse.
"""
