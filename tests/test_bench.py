"""The benchmark CLI runs end to end on the tiny backbone and prints the four figures."""
from mamol.bench import main


def test_bench_tiny_prints_the_four_figures(capsys):
    assert main(["--vit", "tiny", "--steps", "1", "--batch", "4", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for label in ("(a) MaMOL / adapters removed", "(b) encode-all-and-zero / skip-missing",
                  "(c) step with sparse / dense experts", "(d) trainable parameters", "peak memory"):
        assert label in out, label
    assert "2 complete, 1 HSI-missing, 1 LiDAR-missing -> 6 of 8" in out
