"""The paper's experiment protocol (SPEC §8): what the ``run.py`` commands beyond training do.

One concept per module: ``tracking`` (training loggers, run folders, what a run records for reports),
``predict`` (a checkpoint's model loaded once, predicting loaders on the run's device and precision),
``grid`` (``evaluate_grid``: every missing type × ratio), ``maps`` (``predict_map``: classification maps of a
remote scene), ``sweep`` (``sweep``: seeds × methods × datasets × training missing settings), ``report``
(``report``: mean ± std tables and plots), ``tables`` (Markdown / CSV / LaTeX writers) and ``plots``
(matplotlib figures). Nothing is imported here, so ``mamol.train`` can use ``tracking`` without a cycle.
"""
