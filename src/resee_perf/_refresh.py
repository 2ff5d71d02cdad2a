"""Where background refreshes run: one small thread pool per process, and the asyncio tasks."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

# Process-wide by design: one small pool per process runs background refreshes, so a burst of
# keys expiring together queues instead of starting a thread per key. Recreated after fork
# (a pool inherited from a preloading parent has no threads).
_REFRESH_WORKERS = 4
_executor: ThreadPoolExecutor | None = None
_executor_pid = 0
_executor_lock = threading.Lock()
_tasks: set[asyncio.Task[Any]] = set()


def executor() -> ThreadPoolExecutor:
    """This process's refresh pool (tests submit a no-op to it to wait for earlier refreshes)."""
    global _executor, _executor_pid
    with _executor_lock:
        if _executor is None or _executor_pid != os.getpid():
            _executor = ThreadPoolExecutor(_REFRESH_WORKERS, thread_name_prefix="resee-refresh")
            _executor_pid = os.getpid()
        return _executor


def submit(run: Callable[[], None]) -> Future[None] | None:
    """Run ``run`` on the pool; inline if the interpreter is shutting down (a refresh holds
    its key's lock, and losing it would leave the key locked until it expires)."""
    try:
        return executor().submit(run)
    except RuntimeError:
        run()
        return None


def start_task(run: Callable[[], Any]) -> None:
    """Start the coroutine ``run()`` on the running loop, keeping a reference to its task (the
    event loop holds tasks weakly)."""
    task = asyncio.get_running_loop().create_task(run())
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
