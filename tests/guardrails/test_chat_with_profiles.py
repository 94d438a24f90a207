"""Profiles in a real chat turn: ChatService, the in-memory store and the real starter
model, with the NeMo engine as the guard."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bastion_desktop.core.chat import ChatService
from bastion_desktop.core.conversation_store import InMemoryConversationStore, MessageState
from bastion_desktop.core.events import BlockedEvent, DoneEvent, GuardEvent, TokenEvent
from bastion_desktop.core.inference.types import LoadOptions, Role, SamplingParams
from bastion_desktop.core.models import ChatModelSlot
from bastion_guardrails.bundle import ProfileOrigin, read_folder
from bastion_guardrails.decisions import Verdict
from bastion_guardrails.engine import GuardEngine
from bastion_guardrails.profile import load_profile
from bastion_guardrails.runtime import GuardProfileRuntime, OffProfile
from tests.guardrails.conftest import write_profile

pytestmark = [
    pytest.mark.model,
    pytest.mark.blocks_loop(
        "the test builds its guardrail runtimes synchronously on its own loop (the app "
        "builds them on a worker thread: GuardEngine.open)"
    ),
]

PROMPT = "Tell me a story about a lighthouse."
PARAMS = SamplingParams(max_tokens=60, seed=7)


async def chat(
    starter_path: Path, guard: GuardProfileRuntime, text: str = PROMPT
) -> tuple[list[object], InMemoryConversationStore, str]:
    store = InMemoryConversationStore()
    service = ChatService(
        store, ChatModelSlot(LoadOptions(context_length=512)), lambda _: starter_path, guard
    )
    conversation = await store.create_conversation(
        title="t", model_id="starter", profile_id=guard.profile_id, system_prompt=""
    )
    try:
        events = [e async for e in service.send(conversation.id, text, PARAMS)]
    finally:
        await service.models.close()
    return events, store, conversation.id


def reply_text(events: list[object]) -> str:
    return "".join(e.text for e in events if isinstance(e, TokenEvent))


async def test_standard_lets_an_ordinary_reply_through(
    starter_path: Path, engine: GuardEngine
) -> None:
    plain, _, _ = await chat(starter_path, OffProfile())
    guarded, store, conversation = await chat(starter_path, engine.runtime("standard"))
    checked = next(e for e in guarded if isinstance(e, GuardEvent))
    assert checked.decision.verdict is Verdict.ALLOWED
    assert checked.decision.profile_id == "standard"
    assert isinstance(guarded[-1], DoneEvent)
    assert reply_text(guarded) == reply_text(plain), "nothing to mask, nothing changed"
    reply = (await store.messages(conversation))[-1]
    assert reply.state is MessageState.COMPLETE


async def test_workplace_keeps_personal_data_out_of_the_model_and_the_history(
    starter_path: Path, engine: GuardEngine
) -> None:
    text = "Please reply to jane.doe@example.com about invoice 42."
    events, store, conversation = await chat(starter_path, engine.runtime("workplace"), text)
    checked = next(e for e in events if isinstance(e, GuardEvent))
    assert checked.decision.verdict is Verdict.MASKED
    user = (await store.messages(conversation))[0]
    assert user.content == "Please reply to [EMAIL] about invoice 42."
    assert "jane.doe" not in repr(store.guard_events)


def _word_in_the_middle(text: str) -> str:
    """A word the reply reaches after a few tokens: the rail below stops it there."""
    for match in re.finditer(r"[A-Za-z]{4,}", text):
        if match.start() >= 15:
            return match.group().lower()
    pytest.fail(f"no word to stop on in {text!r}")


def _profile_blocking(tmp_path: Path, word: str, *, colang: bool) -> GuardProfileRuntime:
    if colang:
        # A flow of the profile's own: NeMo's streaming output rails run it, showing each
        # chunk of two pieces first (stream_first) and checking it after.
        folder = write_profile(
            tmp_path / "stop-word",
            f"""\
            rails:
              output:
                flows: [stop at the word]
                streaming: {{chunk_size: 2, context_size: 1, stream_first: true}}
            custom_data:
              bastion:
                terms: [{word}]
            """,
            rails_co="""\
            define subflow stop at the word
              $verdict = execute bastion_terms(source="output", mode="block", text=$bot_message)
              if $verdict.is_blocked
                bot bastion refuse
                stop
            """,
        )
    else:
        folder = write_profile(
            tmp_path / "stop-word",
            f"""\
            rails:
              output:
                flows: [bastion block terms on output]
            custom_data:
              bastion:
                terms: [{word}]
            """,
        )
    return GuardEngine().runtime_for(load_profile(read_folder(folder, ProfileOrigin.USER)))


@pytest.mark.parametrize("colang", [False, True], ids=["bastion-rail", "nemo-streaming-rail"])
async def test_a_violation_mid_reply_retracts_it(
    starter_path: Path, tmp_path: Path, colang: bool
) -> None:
    plain, _, _ = await chat(starter_path, OffProfile())
    word = _word_in_the_middle(reply_text(plain))
    guard = _profile_blocking(tmp_path, word, colang=colang)
    events, store, conversation = await chat(starter_path, guard)
    shown = reply_text(events)
    assert shown, "part of the reply was shown before the rail stopped it"
    assert reply_text(plain).startswith(shown)
    blocked = events[-1]
    assert isinstance(blocked, BlockedEvent)
    assert blocked.retracted
    assert blocked.decision.verdict is Verdict.BLOCKED
    assert blocked.decision.stage.value == "output"
    reply = (await store.messages(conversation))[-1]
    assert reply.role is Role.ASSISTANT
    assert reply.state is MessageState.BLOCKED
    assert reply.content == "", "withdrawn text is not kept"
    assert [e.stage for e in store.guard_events] == ["input", "output"]
    assert word not in repr(store.guard_events)
