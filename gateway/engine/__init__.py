"""The per-tick media engine: caller audio of every call decoded, converted and scored in one pass."""

from gateway.engine.engine import MediaEngine
from gateway.engine.lane import Hear, Lane, TickResult

__all__ = ["MediaEngine", "Lane", "TickResult", "Hear"]
