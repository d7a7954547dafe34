"""Frame decoding overlapped with compute: a background thread decodes the next frames (OpenCV's ``imread`` releases
Python's GIL while it decodes) while the main thread detects, embeds and tracks the current one.

A missing or unreadable frame raises, when its turn comes, an error that names the file and the sequence, so that
everything before it is processed and written first.
"""
from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np

__all__ = ["FrameError", "PrefetchReader", "read_frame"]


class FrameError(RuntimeError):
    """A frame file that is missing or cannot be decoded."""


def read_frame(path, sequence: str = "") -> np.ndarray:
    """BGR uint8 frame of ``path``; :class:`FrameError` naming the file when it is missing or not decodable."""
    import cv2

    p = Path(path)
    where = f" (sequence {sequence})" if sequence else ""
    if not p.is_file():
        raise FrameError(f"frame {p} is missing{where}")
    img = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if img is None:
        raise FrameError(f"cannot decode frame {p}{where}: not an image, truncated or corrupt "
                         f"({p.stat().st_size} bytes)")
    return img


class PrefetchReader:
    """Iterates ``(index, BGR frame or the FrameError)`` over ``paths``, decoding up to ``depth`` frames ahead in a
    thread (``depth=0``: decode in the caller's thread). ``decode_s``: the decoding thread's busy time."""

    def __init__(self, paths: Sequence, sequence: str = "", depth: int = 2):
        self.paths = list(paths)
        self.sequence = sequence
        self.depth = int(depth)
        self.decode_s = 0.0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _decode(self, i: int):
        t = time.perf_counter()
        try:
            return read_frame(self.paths[i], self.sequence)
        except FrameError as e:
            return e
        finally:
            self.decode_s += time.perf_counter() - t

    def _work(self, q: "queue.Queue"):
        for i in range(len(self.paths)):
            if self._stop.is_set():
                break
            item = (i, self._decode(i))
            while not self._stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
        while True:  # end marker; the consumer may be gone (stopped early)
            try:
                q.put(None, timeout=0.1)
                break
            except queue.Full:
                if self._stop.is_set():
                    break

    def __iter__(self) -> Iterator[Tuple[int, object]]:
        if self.depth <= 0:
            for i in range(len(self.paths)):
                yield i, self._decode(i)
            return
        q: "queue.Queue" = queue.Queue(maxsize=self.depth)
        self._thread = threading.Thread(target=self._work, args=(q,), daemon=True, name="frame-decoder")
        self._thread.start()
        try:
            while True:
                item = q.get()
                if item is None:
                    return
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
