"""The grader's pytest plugin beside nbval: a cell whose kernel has died fails at once.

nbval waits for a cell's reply for the whole cell timeout, even after the kernel process
has exited (a submission calling ``os._exit``, or a crash in native code), so every such
submission would cost the grade the full timeout. With this plugin (``-p
labkit.grading.nbval_plugin``) the wait polls the kernel process every
:data:`POLL_S` seconds and fails the cell with :data:`KERNEL_DIED` as soon as it is gone;
nbval then reports every later cell as "Kernel dead on test start".
"""

import time
from queue import Empty

from nbval.kernel import RunningKernel

POLL_S = 1.0
"""How often the wait for a cell's reply checks that the kernel process still runs."""

KERNEL_DIED = "Kernel died while running the cell"
"""The failure message of a cell during which the kernel process exited."""

_await_reply = RunningKernel.await_reply


def await_reply_while_alive(kernel: RunningKernel, msg_id: str,
                            timeout: float | None = None) -> None:
    """nbval's ``await_reply`` in slices of :data:`POLL_S`: raises ``queue.Empty`` after
    ``timeout`` seconds as nbval does, and RuntimeError(:data:`KERNEL_DIED`) as soon as
    the kernel process has exited without replying."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = POLL_S if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return _await_reply(kernel, msg_id, timeout=min(POLL_S, left))
        except Empty:
            if not kernel.is_alive():
                raise RuntimeError(KERNEL_DIED) from None
            if deadline is not None and time.monotonic() >= deadline:
                raise


def pytest_configure(config) -> None:
    RunningKernel.await_reply = await_reply_while_alive
