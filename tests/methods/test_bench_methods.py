"""``python -m mamol.bench --methods``: one row per method, timed against linear_probe, prompts' longer sequences."""
import re

import pytest

from mamol.bench import main


def test_method_table_on_the_tiny_backbone(capsys):
    assert main(["--vit", "tiny", "--steps", "1", "--batch", "2", "--device", "cpu", "--methods", "mmp"]) == 0
    out = capsys.readouterr().out
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| (\w+) \|.*$", out, re.M) if m.group(1) != "method"}
    assert list(rows) == ["linear_probe", "mmp"]  # the reference first, always measured
    assert "| 1.00x (1.00x) |" in rows["linear_probe"] and "| 197 tokens |" in rows["linear_probe"]
    assert "| 229 tokens |" in rows["mmp"]  # 197 + 2 prompted blocks x 16 prompts


def test_unknown_method_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["--vit", "tiny", "--methods", "mamol,prefix"])
    assert "choose from mamol, linear_probe" in capsys.readouterr().err
