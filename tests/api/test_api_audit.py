"""API requests in the guardrail audit log, under the request id the client gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion_desktop.context import AppContext
from tests.api.conftest import serving, with_policy
from tests.core.test_audit import CANARY, JAILBREAK, _records


@pytest.mark.model
async def test_api_requests_are_recorded_under_their_request_id(
    api_context: AppContext, tmp_path: Path
) -> None:
    folder = tmp_path / "audit"
    audited = with_policy(api_context, {"GuardrailAuditLog": str(folder)})
    async with serving(audited) as api, api.http() as http:
        answered = await http.post(
            "/v1/chat/completions",
            headers=api.auth(),
            json={"messages": [{"role": "user", "content": CANARY}], "max_tokens": 6},
        )
        refused = await http.post(
            "/v1/chat/completions",
            headers=api.auth(),
            json={"messages": [{"role": "user", "content": JAILBREAK}], "max_tokens": 6},
        )
    assert answered.status_code == refused.status_code == 200
    first, second = _records(folder)
    assert first["request_id"] == answered.headers["x-request-id"]
    assert second["request_id"] == refused.headers["x-request-id"]
    assert first["client"] == "api:tests"
    assert first["outcome"] == "allowed"
    assert second["outcome"] == "blocked"
    assert api.context.audit_log() is not None


async def test_an_unwritable_log_refuses_api_requests(
    api_context: AppContext, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    audited = with_policy(api_context, {"GuardrailAuditLog": str(blocker / "audit")})
    async with serving(audited) as api, api.http() as http:
        refused = await http.post(
            "/v1/chat/completions",
            headers=api.auth(),
            json={"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 6},
        )
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "audit_log_unavailable"
        assert api.slot.host is None
