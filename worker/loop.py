"""One background thread that does one thing every interval until stopped: the base of a run's
lease renewal (liveness.LeaseKeeper), the reconciler and this worker's presence in the registry."""
from __future__ import annotations

import logging
import threading

log = logging.getLogger("genq.worker")


class BackgroundLoop:
    """Calls `tick()` every `interval_s` seconds in a daemon thread; an exception is logged and the
    loop goes on (a database blip must not end it)."""

    name = "loop"

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def tick(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self, wait: bool = False) -> None:
        self._stopping.set()
        if wait and self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.interval_s + 5)

    def _run(self) -> None:
        while not self._stopping.wait(self.interval_s):
            try:
                self.tick()
            except Exception:
                log.exception("%s failed; trying again in %.1fs", self.name, self.interval_s)
