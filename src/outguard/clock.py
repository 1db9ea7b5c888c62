"""The wall clock, as every layer is given it: a function returning seconds since the epoch.

Place in the data flow: at the bottom, beside `errors` and `events`. Code that needs the time
takes a `Clock` argument (default `system_clock`) instead of calling `time.time()` itself, so
that tests drive it: a confirmation deadline, a feed's next fetch, a rule's expiry.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]


def system_clock() -> float:
    """Seconds since the epoch, now (`time.time`)."""
    return time.time()
