"""Schemathesis against the app's own OpenAPI schema (in-process ASGI), as an administrator: no 5xx answer.

Every operation gets property-based requests generated from its schema (valid and, for
the second pass, invalid ones), 20 examples each; `BUDGET_S` is a guard that stops the
run early on a very slow machine so `make test` stays bounded (about 15 s per backend here).
"""

from __future__ import annotations

import time
from typing import Any

import schemathesis
from conftest import login_headers
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from zhizhi.api.app import create_app

BUDGET_S = 50.0
#: Not fuzzed: an endless event stream, and the calls that would end the fuzzer's own session.
SKIP = ("/api/v1/stream", "/api/v1/auth/logout", "/api/v1/users/{username}/disable")


def test_no_server_errors_anywhere(app: Any) -> None:
    api = create_app(app)
    with TestClient(api) as c:
        headers = login_headers(c, app)
        c.post("/api/v1/cases", headers=headers, json={"source_id": "fz-1", "title": "井盖缺失", "lon": 106.52,
                                                       "lat": 29.52, "category_code": "C0101"})
    schema = schemathesis.openapi.from_asgi("/openapi.json", api)
    operations = [r.ok() for r in schema.get_all_operations()]
    operations = [op for op in operations if op.path not in SKIP and "stream" not in op.path.rsplit("/", 1)[-1]]
    assert len(operations) > 20
    failures: list[str] = []
    calls = 0
    stop = time.monotonic() + BUDGET_S
    per_op = 20
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        for op in operations:
            if time.monotonic() > stop:
                break

            @settings(max_examples=per_op, deadline=None, database=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                nonlocal calls
                if time.monotonic() > stop:
                    return
                calls += 1
                try:
                    response = case.call(headers=headers)
                except Exception as exc:  # the in-process client re-raises what the app did not handle
                    failures.append(f"{case.method} {case.formatted_path} {case.query} {case.body!r:.200} "
                                    f"-> raised {type(exc).__name__}: {str(exc)[:200]}")
                    return
                if response.status_code >= 500:
                    failures.append(f"{case.method} {case.formatted_path} {case.query} {case.body!r:.200} "
                                    f"-> {response.status_code} {response.text[:200]}")

            try:
                run()
            except Unsatisfiable:  # nothing invalid to send (an operation without parameters)
                assert mode is GenerationMode.NEGATIVE, op.path
    print(f"schemathesis: {calls} calls over {len(operations)} operations")
    assert calls > 100
    assert failures == [], "\n".join(failures[:20])
