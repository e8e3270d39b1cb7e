"""Progress of long multi-run commands: which run of how many, and the time left at the pace so far."""

import sys
import time


class RunProgress:
    """Prints ``fold 2/5 … 3 min 10 s elapsed, about 4 min 40 s left`` lines to stderr.

    Args:
        label: What one run is called (``fold``, ``point``).
        total: Runs to do.
    """

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total = label, total
        self.start = time.perf_counter()
        self.done = 0

    def starting(self, index: int, detail: str = "") -> None:
        """Announce run ``index`` (0-based) before it starts."""
        elapsed = time.perf_counter() - self.start
        left = f", about {_duration(elapsed / self.done * (self.total - self.done))} left" if self.done else ""
        suffix = f" ({detail})" if detail else ""
        print(f"{self.label} {index + 1}/{self.total}{suffix}: {_duration(elapsed)} elapsed{left}", file=sys.stderr)

    def finished(self) -> None:
        """Count one run as done (its time enters the estimate)."""
        self.done += 1


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"
