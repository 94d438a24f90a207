"""Ending a model host the way a crash or a kill would, once its reply has begun."""

from __future__ import annotations

import os

from bastion_desktop.core.inference.host import ModelHost
from bastion_desktop.core.inference.types import ChatMessage, Role, SamplingParams, TokenText


async def signal_mid_reply(host: ModelHost, signum: int) -> None:
    """Stream a long reply and send `signum` to the host at its first token; the stream
    then ends as the host's end makes it end (ModelHostCrashedError, for a crash)."""
    params = SamplingParams(seed=3, max_tokens=200)
    async for event in host.stream([ChatMessage(Role.USER, "A story.")], params):
        if isinstance(event, TokenText) and host.pid is not None:
            os.kill(host.pid, signum)
