"""The idempotency key of an Airflow task's Jobdock run.

It is made of the task instance's identity and its try: a request re-sent during one try (a
retried HTTP call, a worker that triggers again after a crash before the try ended) gets the
run the first request started, while an Airflow retry (a new try number) starts a new run.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

PREFIX = "airflow"
# A readable part, so that a person reading the engine's runs sees where a run came from;
# the digest alone decides. The whole key stays far below the engine's 255 characters.
_READABLE_MAX = 60
_UNPRINTABLE = re.compile(r"[^\x21-\x7e]")


def idempotency_key(dag_id: str, task_id: str, run_id: str, map_index: int, try_number: int) -> str:
    """`airflow:<dag>.<task>:<sha256 hex>` where the digest covers every part."""
    identity = json.dumps([dag_id, task_id, run_id, map_index, try_number], separators=(",", ":"))
    digest = hashlib.sha256(identity.encode()).hexdigest()
    readable = _UNPRINTABLE.sub("_", f"{dag_id}.{task_id}")[:_READABLE_MAX]
    return f"{PREFIX}:{readable}:{digest}"


def idempotency_key_from_context(context: Any) -> str:
    ti = context["ti"]
    map_index = getattr(ti, "map_index", -1)
    return idempotency_key(ti.dag_id, ti.task_id, ti.run_id, -1 if map_index is None else map_index, ti.try_number)
