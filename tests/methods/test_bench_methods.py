"""``python -m mamol.bench --methods``: each method's trainable parameters at default and matched budgets, then one
row per method, timed against linear_probe, prompts' longer sequences."""
import re

import pytest

from mamol.bench import main


def test_method_table_on_the_tiny_backbone(capsys):
    assert main(["--vit", "tiny", "--steps", "1", "--batch", "2", "--device", "cpu", "--methods", "mmp"]) == 0
    budgets, out = capsys.readouterr().out.split("=== methods at")
    counted = {m.group(1): m.group(0) for m in re.finditer(r"^\| (\w+) \|.*$", budgets, re.M)}
    assert counted["mamol"] == "| mamol | 391,219 | adapter_rank=8 | 391,219 | +0.00% |"  # the reference, always
    assert counted["mmp"] == "| mmp | 380,111 | prompt_length=30 | 390,863 | -0.09% |"  # scaled to MaMOL's count
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| (\w+) \|.*$", out, re.M) if m.group(1) != "method"}
    assert list(rows) == ["linear_probe", "mmp"]  # the reference first, always measured
    assert "| 1.00x (1.00x) |" in rows["linear_probe"] and "| 197 tokens |" in rows["linear_probe"]
    assert "| 229 tokens |" in rows["mmp"]  # 197 + 2 prompted blocks x 16 prompts


def test_unknown_method_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["--vit", "tiny", "--methods", "mamol,prefix"])
    assert "choose from mamol, linear_probe" in capsys.readouterr().err
