"""How far a run is, where someone will look: a bar on a terminal, log lines in a job's log.

A SLURM job's stderr is no terminal, and a bar redrawn there is either off (tqdm disabled) or a
wall of carriage returns. Off a terminal, ``Progress`` logs one line every ``every_samples``
samples or ``every_s`` seconds, whichever comes first: samples done of the total, failures so
far, throughput, ETA and peak memory, so that a job log read hours later says whether the job
is alive, how fast it goes and how close it is to its memory or time limit.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

from tqdm import tqdm

from spark_bench import memory

log = logging.getLogger(__name__)

# Off a terminal, a line every this many samples or seconds, whichever first: an 8B model on
# LongBench answers a sample in seconds (a line about every minute), a 128k RULER context takes
# minutes (a line every few minutes, not one per hour).
EVERY_SAMPLES = 25
EVERY_S = 120.0
GIB = 2**30


class Progress:
    """Counts answered samples of a run; ``update`` after each prefill group, ``close`` at the end."""

    def __init__(
        self,
        total: int,
        done_before: int = 0,
        every_samples: int = EVERY_SAMPLES,
        every_s: float = EVERY_S,
        interactive: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.done_before = total, done_before
        self.every_samples, self.every_s, self.clock = every_samples, every_s, clock
        self.done = self.failed = 0
        self.start = self.last_time = clock()
        self.last_done = 0
        interactive = sys.stderr.isatty() if interactive is None else interactive
        self.bar = tqdm(total=total, desc="samples", unit="sample") if interactive else None
        if not interactive:
            log.info("progress: %d samples to answer (%d answered before)", total, done_before)

    def update(self, answered: int, failed: int = 0) -> None:
        self.done += answered
        self.failed += failed
        if self.bar is not None:
            self.bar.update(answered)
            return
        now = self.clock()
        if self.done - self.last_done >= self.every_samples or now - self.last_time >= self.every_s:
            self._log(now)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.done != self.last_done or self.done == 0:
            self._log(self.clock())

    def line(self, now: float) -> str:
        elapsed = now - self.start
        rate = self.done / elapsed * 60 if elapsed > 0 else 0.0
        left = self.total - self.done
        eta = f"{left / rate:.0f} min" if rate > 0 else "unknown"
        gpu = memory.peak_gpu_bytes()
        peak = f"peak GPU {gpu / GIB:.1f} GiB, " if gpu is not None else ""
        return (
            f"progress: {self.done}/{self.total} samples ({self.failed} failed), "
            f"{rate:.1f} samples/min, ETA {eta}, {peak}peak RSS {memory.peak_rss_bytes() / GIB:.1f} GiB"
        )

    def _log(self, now: float) -> None:
        log.info("%s", self.line(now))
        self.last_time, self.last_done = now, self.done
