"""A call's transfer, as ``POST /calls/{callId}/control`` ``transfer`` records it."""

from __future__ import annotations

from sqlalchemy import update

from gateway.store.base import StoreBase
from gateway.store.errors import UnknownCall
from gateway.store.helpers import _rowcount
from gateway.store.models import Call

__all__ = ["TransfersMixin"]


class TransfersMixin(StoreBase):
    """The ``calls.transferred_to`` / ``transferred_at`` columns."""

    def mark_transferred(self, call_id: str, to: str | None) -> None:
        """Record the call's transfer to ``to`` (E.164), now: written before the carrier is asked,
        so the session's end, which the transfer causes, never hangs the carrier's call up
        (:mod:`gateway.callsetup`); ``None`` clears it (the carrier refused). The status is not
        touched (the session's end finalises the call).

        Raises:
            UnknownCall: no such call.
        """
        with self._session() as s, s.begin():
            res = s.execute(
                update(Call).where(Call.id == call_id).values(transferred_to=to, transferred_at=self.now() if to else None)
                .execution_options(synchronize_session=False)
            )  # fmt: skip
            if _rowcount(res) != 1:
                raise UnknownCall(call_id)
