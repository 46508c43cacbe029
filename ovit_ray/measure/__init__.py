"""Resource measurement shared by the CLI and benchmarks (no torch, no I/O beyond /proc).

The torch timing of models lives in `ovit_ray.measure.speed`, imported only where it is used, so importing
this package stays torch-free (the CLI's `--dry-run` must not load torch)."""

from __future__ import annotations

import resource
import threading
import time


def current_rss_mb() -> float:
    """Resident set size of this process now (Linux /proc), in MiB."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


class PeakRSS:
    """Highest RSS seen while the `with` block runs, sampled every `interval` seconds.

    ru_maxrss only knows the whole process's peak, so measuring one step among several needs sampling.
    """

    def __init__(self, interval: float = 0.01):
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, current_rss_mb())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self.peak_mb = current_rss_mb()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, current_rss_mb())
