"""Outcome spool: a call's final record, kept on disk when the database cannot take it.

``finalise_call`` is the one write that must not be lost: the transcript and events exist
only in the ending session's memory. When the database refuses it (a restart, a failover, a
locked SQLite file, a full disk on the database host), :func:`finalise_with_retry` retries a
few times with backoff, then writes the record as one JSON file under the spool directory
(written to a temporary name, flushed with ``fsync`` and renamed, so a file is complete or
absent). :func:`replay_spool` hands every spooled record to the store at the next start-up,
before :func:`gateway.store.recovery.recover_lost_calls`, so a spooled outcome wins over
``node_lost``; a record the store took or no longer wants (unknown call, already final) is
deleted, one it still cannot take stays for the next start.

Synchronous (file and database I/O): the app runs these in a thread.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gateway.store.errors import UnknownCall
from gateway.store.models import IllegalTransition

__all__ = ["finalise_with_retry", "replay_spool", "spool_outcome"]

log = logging.getLogger("gateway.store")

#: Waits (s) between attempts of :func:`finalise_with_retry`: about 3.5 s in all.
_BACKOFF_S = (0.25, 1.0, 2.25)


def spool_outcome(spool_dir: Path, call_id: str, fields: Mapping[str, Any]) -> Path:
    """Write one call's ``finalise_call`` keyword arguments to ``<spool_dir>/<call_id>.json``.

    Raises:
        OSError: the spool directory cannot be written either.
    """
    spool_dir.mkdir(parents=True, exist_ok=True)
    path = spool_dir / f"{call_id}.json"
    tmp = path.with_suffix(".json.tmp")
    data = json.dumps({"call_id": call_id, "fields": dict(fields)}, default=str).encode()
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def finalise_with_retry(
    finalise: Callable[..., Any],
    spool_dir: Path,
    call_id: str,
    fields: Mapping[str, Any],
    *,
    backoff_s: tuple[float, ...] = _BACKOFF_S,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """``finalise(call_id, **fields)``, retried on database errors, else spooled.

    Returns:
        ``"stored"``, ``"refused"`` (the store said no: unknown call or illegal transition; not
        retried, logged) or ``"spooled"``.

    Raises:
        OSError: neither the database nor the spool took the record (logged by the caller).
    """
    for attempt, wait in enumerate((*backoff_s, None)):
        try:
            finalise(call_id, **fields)
            return "stored"
        except (UnknownCall, IllegalTransition, ValueError) as exc:
            log.warning("call %s: the store refused its final record: %s", call_id, exc)
            return "refused"
        except Exception:  # noqa: BLE001 - a database error: retry, then spool
            if wait is None:
                log.warning("call %s: final record not stored after %d attempts", call_id, attempt + 1,
                            exc_info=True)  # fmt: skip
                break
            sleep(wait)
    path = spool_outcome(spool_dir, call_id, fields)
    log.warning("call %s: final record spooled to %s (replayed at the next start)", call_id, path)
    return "spooled"


def replay_spool(finalise: Callable[..., Any], spool_dir: Path) -> int:
    """Hand every spooled record to ``finalise``; returns how many the store took."""
    if not spool_dir.is_dir():
        return 0
    stored = 0
    for path in sorted(spool_dir.glob("*.json")):
        try:
            entry = json.loads(path.read_bytes())
            finalise(entry["call_id"], **entry["fields"])
            stored += 1
        except (UnknownCall, IllegalTransition) as exc:
            log.warning("spooled record %s not applied: %s", path.name, exc)
        except (ValueError, KeyError, TypeError) as exc:  # not a record of ours: keep it aside
            log.warning("spooled record %s is unreadable (%s): kept as .bad", path.name, exc)
            os.replace(path, path.with_suffix(".bad"))
            continue
        except Exception:  # noqa: BLE001 - the database still refuses: keep it for next time
            log.warning("spooled record %s not applied yet", path.name, exc_info=True)
            continue
        path.unlink(missing_ok=True)
    return stored
