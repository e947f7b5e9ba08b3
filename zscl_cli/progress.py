"""How ``zscl job watch`` (and ``job create --watch``) shows a job's progress.

On a terminal, a live tqdm line redrawn in place. Anywhere else (a file, a pipe, CI logs) a
redrawn line is written out every time: one job once wrote 758 KB of them. There,
:class:`ProgressLines` decides: one line when the state changes, one each ``every_percent`` of
progress, nothing in between.
"""

from __future__ import annotations

__all__ = ["ProgressLines", "describe"]


def describe(job: dict) -> str:
    """One line of a job snapshot: state, percent, step, losses and ETA."""
    parts = [f"job {job['id']}: {job['state']}", f"{_percent(job):3d}%",
             f"step {job['step']}/{job['total_steps']}"]
    parts += [f"{name}={value:.3f}" for name, value in (job.get("losses") or {}).items()
              if isinstance(value, (int, float))]
    if job.get("eta_s"):
        parts.append(f"eta {job['eta_s']:.0f}s")
    return "  ".join(parts)


def _percent(job: dict) -> int:
    """Whole percent done; rounded first, so that 0.3 is 30 (not 29.999...)."""
    return int(round(float(job.get("progress") or 0.0) * 100, 6))


class ProgressLines:
    """The lines to print for a sequence of job snapshots when the output is not a terminal.

    Args:
        every_percent: print a line each time progress enters a new band this wide (10: at
            10%, 20%, ...; a jump from 5% to 35% prints one line, not three).
    """

    def __init__(self, every_percent: int = 10):
        if not 0 < every_percent <= 100:
            raise ValueError(f"every_percent must be in 1..100, not {every_percent}")
        self.every_percent = every_percent
        self._state: str | None = None
        self._band = -1

    def update(self, job: dict) -> str | None:
        """The line to print for this snapshot, or None when it says nothing new."""
        band = _percent(job) // self.every_percent
        changed = job["state"] != self._state
        if not changed and band < self._band:  # a requeued job starts over: follow it quietly
            self._band = band
        if not changed and band <= self._band:
            return None
        self._state, self._band = job["state"], band
        return describe(job)
