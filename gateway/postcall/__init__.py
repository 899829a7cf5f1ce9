"""Post-call results: a plain-language summary and the requested ``fields`` of each ended call.

When a call reaches a terminal status its row is marked ``pending`` in the same transaction
(:mod:`gateway.store.postcall`); the :class:`PostCallWorker` (an app lifespan task, off the
media path) claims it with a lease, asks the operator's OpenAI-compatible chat endpoint
(``GATEWAY_POSTCALL_BASE_URL``, :mod:`gateway.postcall.chat`) for a JSON answer in a strict
schema built from the fields (:mod:`gateway.postcall.fields`), validates it with pydantic
(a value the conversation does not support is ``null``) and stores it with
``Store.finish_post_call``. No endpoint configured: ``skipped``, and the record says why.
"""

from gateway.postcall.chat import ChatExtractor, ExtractionFailed
from gateway.postcall.fields import Answer, InvalidAnswer, answer_model, answer_schema, parse_answer
from gateway.postcall.worker import NOT_CONFIGURED, Outcome, PostCallWorker

__all__ = [
    "PostCallWorker",
    "Outcome",
    "NOT_CONFIGURED",
    "ChatExtractor",
    "ExtractionFailed",
    "Answer",
    "InvalidAnswer",
    "answer_schema",
    "answer_model",
    "parse_answer",
]
