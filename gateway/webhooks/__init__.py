"""Signed webhooks from the persistent outbox (Standard Webhooks).

The store writes each event into ``webhook_outbox`` in the transaction of the change it
reports (:mod:`gateway.store.outbox`); :class:`WebhookWorker` (started by the app's lifespan)
delivers them, signed with ``standardwebhooks``, on the Standard Webhooks retry schedule
(:mod:`gateway.webhooks.schedule`), through the outbound policy (:mod:`gateway.outbound`).
"""

from gateway.webhooks.report import call_report_renderer, report_renderer
from gateway.webhooks.schedule import SCHEDULE_S, encode_body, retry_delay_s, signed_request
from gateway.webhooks.worker import ReportRenderer, WebhookWorker

__all__ = [
    "WebhookWorker", "ReportRenderer", "report_renderer", "call_report_renderer", "SCHEDULE_S", "retry_delay_s", "signed_request",
    "encode_body",
]  # fmt: skip
