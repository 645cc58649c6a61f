"""The worker's peak-RSS counter reset, through a descriptor kept across confinement.

``/proc/self/clear_refs`` is written after every reply so that ``ru_maxrss`` measures the
next call alone. Once the kernel wall is up (:mod:`sandbox.kernel_wall`) nothing under
``/proc`` can be opened any more — Landlock grants no rule there, and the process is no
longer dumpable, so its ``/proc`` entries belong to root — hence the file is opened once,
before confinement, and the descriptor kept (Landlock and file modes are checked at ``open``,
not at ``write``).
"""

from __future__ import annotations

import contextlib
import os


class PeakRssCounter:
    """Resets this process's VmHWM; best effort where ``/proc`` is missing."""

    def __init__(self) -> None:
        self._fd: int | None = None

    def open(self) -> None:
        """Open ``/proc/self/clear_refs`` (idempotent); call before confining."""
        if self._fd is None:
            with contextlib.suppress(OSError):
                self._fd = os.open("/proc/self/clear_refs", os.O_WRONLY | os.O_CLOEXEC)

    def reset(self) -> None:
        self.open()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.write(self._fd, b"5")
