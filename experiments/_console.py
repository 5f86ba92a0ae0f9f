"""What our scripts print: Esper's progress lines (the library logs them at INFO) as plain text on stdout."""

from __future__ import annotations

import logging
import sys


def show_progress() -> None:
    """Esper's INFO lines on stdout, unprefixed; other libraries keep their own levels (esper.runtime.quiet drops
    their known noise when Ray starts)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    esper_log = logging.getLogger("esper")
    esper_log.addHandler(handler)
    esper_log.setLevel(logging.INFO)
    esper_log.propagate = False
