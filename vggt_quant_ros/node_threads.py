"""What the ``reconstruct`` node's threads share: the latest-wins queue from the input callback group to the
inference worker, and the watch over silent cameras. Plain Python, no ROS."""

import threading
from collections import deque
from typing import Deque, Dict, Generic, List, Optional, Tuple, TypeVar

T = TypeVar("T")


class LatestWinsQueue(Generic[T]):
    """Bounded FIFO between threads whose ``put`` never blocks: when full, the oldest item is dropped."""

    def __init__(self, maxsize: int):
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self._items: Deque[T] = deque()
        self._maxsize = maxsize
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: T) -> int:
        """Enqueue; returns how many queued items were dropped to make room (0 or 1)."""
        with self._cond:
            dropped = 0
            if len(self._items) >= self._maxsize:
                self._items.popleft()
                dropped = 1
            self._items.append(item)
            self._cond.notify()
            return dropped

    def get(self, timeout: Optional[float] = None) -> Optional[T]:
        """The oldest item, or None after ``timeout`` seconds or once closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._items or self._closed, timeout)
            if self._closed or not self._items:
                return None
            return self._items.popleft()

    def clear(self) -> int:
        """Drop every queued item; returns how many there were."""
        with self._cond:
            count = len(self._items)
            self._items.clear()
            return count

    def close(self) -> None:
        """Wake every ``get`` (they return None) and refuse nothing: later puts are simply never read."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class StallWatch:
    """Which cameras have been silent for longer than ``timeout_s`` (times from a monotonic clock)."""

    def __init__(self, num_cameras: int, timeout_s: float, now: float):
        self.timeout_s = timeout_s
        self._last_seen = [now] * num_cameras  # counting from start-up reports cameras that never send
        self._stalled: Dict[int, bool] = {c: False for c in range(num_cameras)}

    def seen(self, camera: int, now: float) -> None:
        self._last_seen[camera] = now

    def update(self, now: float) -> Tuple[List[int], List[int]]:
        """(cameras that just stalled, cameras that just resumed) since the previous call."""
        stalled, resumed = [], []
        for camera, last in enumerate(self._last_seen):
            is_stalled = now - last > self.timeout_s
            if is_stalled != self._stalled[camera]:
                (stalled if is_stalled else resumed).append(camera)
                self._stalled[camera] = is_stalled
        return stalled, resumed

    def silent_for(self, camera: int, now: float) -> float:
        return now - self._last_seen[camera]

    @property
    def stalled(self) -> List[int]:
        return [camera for camera, is_stalled in self._stalled.items() if is_stalled]
