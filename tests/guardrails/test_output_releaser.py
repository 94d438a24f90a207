"""`OutputReleaser` on its own: which pieces reach a rail's dispatch (NeMo, in the app)
and what a detector that breaks does to the reply."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from bastion_guardrails.detectors.secrets import SecretsDetector
from bastion_guardrails.rail_actions import RAILS
from bastion_guardrails.rail_actions import _detector_action as detector_action
from bastion_guardrails.streaming import Cleared, OutputReleaser, RailRun, Stopped, StreamRail

KEY = "AKIA" + "IOSFODNN7EXAMPLE"


@dataclass
class ActionDispatch:
    """Runs the registry's secrets action over the rail's detector, as NeMo's
    dispatcher runs it in the app, and keeps the text of every piece it was asked about."""

    seen: list[str] = field(default_factory=list)

    async def __call__(self, rail: StreamRail, text: str) -> RailRun:
        self.seen.append(text)
        spec = next(spec for spec in RAILS if spec.key == "secrets")
        action = detector_action(spec, rail.detector)
        outcome = await action(text=text, source="output", mode="mask")
        return RailRun(None if outcome.failed else outcome, 0.1)


class BrokenDetector(SecretsDetector):
    def find(self, text: str) -> list:  # type: ignore[type-arg]
        raise RuntimeError("a bug in a detector")


def rail(detector: SecretsDetector) -> StreamRail:
    return StreamRail("secrets", "Secrets", "secrets", True, detector)


def feed_all(releaser: OutputReleaser, pieces: list[str]) -> list[object]:
    async def go() -> list[object]:
        released = [await releaser.feed(piece) for piece in pieces]
        return [*released, await releaser.finish()]

    return [r for r in asyncio.run(go()) if r is not None]


def test_prose_never_reaches_the_dispatch_and_a_secret_does() -> None:
    dispatch = ActionDispatch()
    releaser = OutputReleaser([rail(SecretsDetector())], dispatch)
    released = feed_all(releaser, ["The keeper", " lit", " the lamp.", " Use ", KEY, " now."])
    assert all(isinstance(r, Cleared) for r in released)
    text = "".join(r.text for r in released if isinstance(r, Cleared))
    assert text == "The keeper lit the lamp. Use [SECRET] now."
    # The rail's action ran once: on the piece that held the key, with what was
    # shown before it as context.
    assert len(dispatch.seen) == 1
    assert KEY in dispatch.seen[0]
    assert dispatch.seen[0].startswith("The keeper")


@pytest.mark.log_warnings("the broken detector is logged by the rail's action")
def test_a_detector_that_raises_stops_the_reply_as_a_failed_check() -> None:
    dispatch = ActionDispatch()
    releaser = OutputReleaser([rail(BrokenDetector())], dispatch)
    stopped = asyncio.run(releaser.feed("The keeper"))
    assert isinstance(stopped, Stopped)
    assert stopped.failed
    assert dispatch.seen == ["The keeper"]  # the dispatch was asked, and it failed too


def test_a_secret_key_streamed_after_its_access_key_id_is_never_shown() -> None:
    """Token by token, as a model writes it: no piece of the secret key is released
    before the whole of it can be recognised."""
    secret = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"
    reply = f"Here's the key {KEY} and secret {secret} for you."
    pieces = [reply[i : i + 3] for i in range(0, len(reply), 3)]
    released = feed_all(OutputReleaser([rail(SecretsDetector())], ActionDispatch()), pieces)
    text = "".join(r.text for r in released if isinstance(r, Cleared))
    assert text == "Here's the key [SECRET] and secret [SECRET] for you."
