"""Off a terminal, a run logs its progress at a steady cadence; on one, it draws the bar."""

from __future__ import annotations

import logging
import re

import pytest

from spark_bench.progress import Progress

LINE = re.compile(
    r"progress: (\d+)/(\d+) samples \((\d+) failed\), ([\d.]+) samples/min, ETA (\S+ ?\w*), "
    r"peak RSS [\d.]+ GiB"
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def lines(caplog) -> list[tuple[str, ...]]:
    return [LINE.search(r.getMessage()).groups() for r in caplog.records if LINE.search(r.getMessage())]


def test_a_line_every_n_samples_or_m_seconds_whichever_first(caplog):
    clock = Clock()
    with caplog.at_level(logging.INFO, logger="spark_bench.progress"):
        progress = Progress(100, every_samples=10, every_s=60, interactive=False, clock=clock)
        for _ in range(25):  # fast samples: a line each 10 samples
            clock.now += 3
            progress.update(1)
        assert [line[0] for line in lines(caplog)] == ["10", "20"]
        clock.now += 61  # one slow sample: a line after 60 s though only 6 samples came
        progress.update(1, failed=1)
        progress.close()
    done, total, failed, rate, eta = lines(caplog)[2]
    assert (done, total, failed) == ("26", "100", "1")
    assert float(rate) == round(26 / (25 * 3 + 61) * 60, 1) and eta.endswith("min")
    assert "100 samples to answer" in caplog.text


def test_close_logs_the_last_count_once(caplog):
    clock = Clock()
    with caplog.at_level(logging.INFO, logger="spark_bench.progress"):
        progress = Progress(5, every_samples=10, interactive=False, clock=clock)
        clock.now += 1
        progress.update(5)
        progress.close()
    assert [line[:2] for line in lines(caplog)] == [("5", "5")]


def test_on_a_terminal_the_bar_and_no_lines(caplog, capsys):
    with caplog.at_level(logging.INFO, logger="spark_bench.progress"):
        progress = Progress(3, every_samples=1, interactive=True)
        progress.update(3)
        progress.close()
    assert not lines(caplog) and "3/3" in capsys.readouterr().err


@pytest.mark.subprocess
def test_a_run_off_a_terminal_logs_its_progress_into_its_job_log(tmp_path):
    from tests.helpers import run_py

    proc = run_py("model=tiny-llama", "press=snapkv", "logger=none", "max_samples=2", "max_new_tokens=4",
                  "dataset.context_length=512", f"paths.results_root={tmp_path / 'res'}",
                  f"hydra.run.dir={tmp_path / 'job'}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (job_log,) = (tmp_path / "job").glob("*.log")
    assert "progress: 4/4 samples (0 failed)" in job_log.read_text()  # two RULER tasks x 2
