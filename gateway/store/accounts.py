"""API keys and agents: the :class:`Store` methods that manage them.

API keys are returned in plaintext once, at creation; only their SHA-256 hex digests are
stored.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select, update

from gateway.store.base import StoreBase
from gateway.store.helpers import (
    API_KEY_PREFIX,
    _agent_record,
    _api_key_record,
    _rowcount,
    hash_secret,
    new_id,
)
from gateway.store.models import Agent, ApiKey
from gateway.store.records import AgentRecord, ApiKeyRecord
from gateway.tenants import DEFAULT_TENANT, check_tenant_name

__all__ = ["ApiKeysMixin", "AgentsMixin"]


class ApiKeysMixin(StoreBase):
    """Create, verify, revoke and list API keys."""

    def create_api_key(self, name: str, *, tenant: str = DEFAULT_TENANT) -> tuple[str, ApiKeyRecord]:
        """Create an API key acting for ``tenant``.

        Returns:
            ``(key, record)``: the plaintext key (``gw_`` + 43 URL-safe characters), shown
            this once and never stored, and its record.

        Raises:
            ValueError: ``tenant`` is not 1–32 lower-case letters and digits.
        """
        check_tenant_name(tenant)
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        row = ApiKey(
            id=new_id("key"), name=name, key_hash=hash_secret(key), prefix=key[:8],
            tenant=tenant, created_at=self.now(),
        )  # fmt: skip
        with self._session() as s, s.begin():
            s.add(row)
        return key, _api_key_record(row)

    def authenticate_api_key(self, key: str | None) -> ApiKeyRecord | None:
        """The record of ``key`` if it is a live (not revoked) API key, else ``None``.

        Never raises for bad input.
        """
        if not key or not isinstance(key, str) or len(key) > 512:
            return None
        digest = hash_secret(key)
        with self._session() as s:
            row = s.scalars(select(ApiKey).where(ApiKey.key_hash == digest)).one_or_none()
            if row is None or row.revoked_at is not None or not hmac.compare_digest(row.key_hash, digest):
                return None
            return _api_key_record(row)

    def verify_api_key(self, key: str | None) -> bool:
        """Whether ``key`` is a live (not revoked) API key. Never raises for bad input."""
        return self.authenticate_api_key(key) is not None

    def revoke_api_key(self, key_id: str) -> bool:
        """Revoke a key by id. Returns ``False`` if no live key has that id."""
        with self._session() as s, s.begin():
            res = s.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=self.now())
            )
            return _rowcount(res) == 1

    def list_api_keys(self) -> list[ApiKeyRecord]:
        """All keys (live and revoked), oldest first."""
        with self._session() as s:
            rows = s.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)).all()
            return [_api_key_record(r) for r in rows]

class AgentsMixin(StoreBase):
    """Create and read agents."""

    def create_agent(
        self,
        *,
        name: str,
        system_prompt: str,
        voice: str,
        language: str,
        greeting: str,
        model: str = "local",
        temperature: float = 0.0,
        first_speaker: str = "agent",
        interruptible: bool = False,
        turn_mode: str = "gateway",
        barge_in_mode: str | None = None,
        barge_in_commit_ms: int = 400,
        max_duration_s: int = 3000,
        inactivity_timeout_s: int = 30,
        inactivity_action: str = "hangup",
        recording_enabled: bool = True,
        tools: Iterable[Mapping[str, Any]] = (),
        secret_refs: Mapping[str, str] | None = None,
        tenant: str = DEFAULT_TENANT,
    ) -> AgentRecord:
        """Store a new agent of ``tenant`` (values are validated by the API layer, not here)."""
        row = Agent(
            tenant=tenant,
            id=new_id("agt"),
            name=name,
            system_prompt=system_prompt,
            voice=voice,
            language=language,
            greeting=greeting,
            model=model,
            temperature=float(temperature),
            first_speaker=first_speaker,
            interruptible=interruptible,
            turn_mode=turn_mode,
            barge_in_mode=barge_in_mode,
            barge_in_commit_ms=int(barge_in_commit_ms),
            max_duration_s=int(max_duration_s),
            inactivity_timeout_s=int(inactivity_timeout_s),
            inactivity_action=inactivity_action,
            recording_enabled=recording_enabled,
            tools=[dict(t) for t in tools],
            secret_refs=dict(secret_refs or {}),
            created_at=self.now(),
        )
        with self._session() as s, s.begin():
            s.add(row)
        return _agent_record(row)

    def get_agent(self, agent_id: str, *, tenant: str | None = None) -> AgentRecord | None:
        """The agent with this id, or ``None`` (also when ``tenant`` is given and the agent
        belongs to another tenant)."""
        with self._session() as s:
            row = s.get(Agent, agent_id)
            if row is None or (tenant is not None and row.tenant != tenant):
                return None
            return _agent_record(row)

    def list_agents(self, *, tenant: str = DEFAULT_TENANT, limit: int = 1000) -> list[AgentRecord]:
        """The agents of ``tenant``, oldest first, at most ``limit`` of them."""
        with self._session() as s:
            rows = s.scalars(
                select(Agent).where(Agent.tenant == tenant).order_by(Agent.created_at, Agent.id).limit(limit)
            ).all()
            return [_agent_record(r) for r in rows]
