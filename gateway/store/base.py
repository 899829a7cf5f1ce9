"""The core of :class:`gateway.store.repo.Store`: engine, session factory and clock.

The per-area mixins (:mod:`gateway.store.accounts`, :mod:`gateway.store.calls`) build on
:class:`StoreBase`; see :mod:`gateway.store.repo` for the threading and secrets contract.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from gateway.store.helpers import _make_engine, _utcnow
from gateway.store.models import Base
from gateway.store.schema import add_missing_columns

__all__ = ["StoreBase"]


class StoreBase:
    """Engine, sessions and clock shared by the store's mixins (see :class:`Store`)."""

    def __init__(
        self,
        database_url: str,
        *,
        clock: Callable[[], datetime] = _utcnow,
        echo: bool = False,
    ) -> None:
        self.engine = _make_engine(database_url, echo=echo)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._clock = clock

    # -- lifecycle -----------------------------------------------------------------------

    def create_all(self) -> None:
        """Create any missing tables, and add the columns and indexes older tables lack
        (:func:`gateway.store.schema.add_missing_columns`). Idempotent; no other migrations."""
        Base.metadata.create_all(self.engine)
        add_missing_columns(self.engine)

    def close(self) -> None:
        """Dispose of the engine's connection pool."""
        self.engine.dispose()

    def now(self) -> datetime:
        """The store's clock (aware UTC)."""
        return self._clock()

    def _session(self) -> Session:
        return self._sessions()
