"""One background thread that does one thing every interval until stopped: the base of a run's
lease renewal (liveness.LeaseKeeper), the reconciler and this worker's presence in the registry."""
from __future__ import annotations

import logging
import threading

log = logging.getLogger("genq.worker")


class BackgroundLoop:
    """Calls `tick()` every `interval_s` seconds in a daemon thread, or at once when nudged; an
    exception is logged and the loop goes on (a database blip must not end it)."""

    name = "loop"

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._stopping = False
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def tick(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def nudge(self) -> None:
        """Tick now rather than at the end of the interval."""
        self._wake.set()

    def stop(self, wait: bool = False) -> None:
        self._stopping = True
        self._wake.set()
        if wait and self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.interval_s + 5)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._stopping:
                return
            try:
                self.tick()
            except Exception:
                log.exception("%s failed; trying again in %.1fs", self.name, self.interval_s)
