"""Emrakul: the reaper — pressure-tests fossils by withering them, and culls what does not pay its rent."""

from esper.emrakul.config import EmrakulConfig
from esper.emrakul.reaper import EmrakulReaper, build_reaper

__all__ = ["EmrakulConfig", "EmrakulReaper", "build_reaper"]
