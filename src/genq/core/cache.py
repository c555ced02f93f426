"""A small least-recently-used cache a worker keeps across jobs (loaded models)."""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable

from genq.core.config import DEFAULT_MODEL_CACHE_SIZE


class ModelCache:
    def __init__(self, capacity: int = DEFAULT_MODEL_CACHE_SIZE) -> None:
        if capacity < 1:
            raise ValueError(f"model cache capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # how many times a loader ran: a miss

    def get_or_load(self, key: Any, loader: Callable[[], Any]) -> tuple[Any, bool]:
        """Return (value, was_cached). Loads on a miss and evicts the least recently used."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key], True
        value = loader()
        with self._lock:
            self.loads += 1
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return value, False

    def __len__(self) -> int:
        return len(self._items)
