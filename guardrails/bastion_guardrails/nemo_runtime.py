"""`NemoProfileRuntime`: a profile running on its cached LLMRails, implementing the
`GuardProfileRuntime` protocol ChatService uses (see engine.py for the two lanes)."""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bastion_guardrails import explain
from bastion_guardrails.decisions import GuardDecision, Judgement, RailTrace, Stage, Verdict
from bastion_guardrails.judged import judged
from bastion_guardrails.models import SAFETY_ROLE
from bastion_guardrails.plan import Lane, PlannedRail, ProfilePlan
from bastion_guardrails.rail_actions import (
    CATEGORIES_KEY,
    JUDGEMENT_KEY,
    RECORDER_KEY,
    UNSAFE_CONTENT,
    VerdictRecorder,
    findings_of,
)
from bastion_guardrails.runtime import (
    GuardMessage,
    OutputBlocked,
    OutputEvent,
    Pace,
    PassedText,
)
from bastion_guardrails.streaming import (
    Cleared,
    OutputReleaser,
    RailRun,
    Release,
    Stopped,
    StreamRail,
)

log = logging.getLogger(__name__)

_VARIABLES = ("$user_message", "$bot_message")
_VIOLATIONS = ("guardrails_violation", "internal_error")


@dataclass(frozen=True)
class _DirectRail:
    """A model-free rail with its action and parameters, looked up once from its flow."""

    stream: StreamRail
    planned: PlannedRail
    action: str
    params: dict[str, Any]


def _outcome_name(run: RailRun) -> str:
    if run.failed:
        return "failed"
    return str(run.outcome.decision.value)


class NemoProfileRuntime:
    def __init__(self, plan: ProfilePlan, rails: Any) -> None:
        from nemoguardrails.rails.llm.utils import (
            get_action_details_from_flow_id,
        )

        self.plan = plan
        self.status = explain.profile_status(plan)
        self._rails = rails
        self._dispatcher = rails.runtime.action_dispatcher
        self._name = plan.profile.name
        self._direct: dict[Stage, list[_DirectRail]] = {}
        for stage in Stage:
            self._direct[stage] = []
            for planned in plan.rails(stage, Lane.DIRECT):
                library = planned.flow.library
                assert library is not None
                assert library.spec.make_detector is not None
                detector = library.spec.make_detector(plan.profile.settings)
                stream = StreamRail(
                    planned.name, planned.title, library.spec.category, planned.masks, detector
                )
                action, params = get_action_details_from_flow_id(planned.name, rails.config.flows)
                self._direct[stage].append(_DirectRail(stream, planned, action, params))
        self._by_stream = {d.stream.name: d for rails_ in self._direct.values() for d in rails_}
        self._nemo = {stage: plan.rails(stage, Lane.NEMO) for stage in Stage}
        # When the streamed reply's NeMo-lane rails are all content-safety rails of the
        # library, they are checked at sentence boundaries (judged.py), not in NeMo's
        # chunks; a profile's own Colang flows still go through NeMo.
        self._judges: list[tuple[PlannedRail, str, dict[str, Any]]] = []
        output = self._nemo[Stage.OUTPUT]
        if output and all(_is_model_rail(r) for r in output):
            for planned in output:
                action, params = get_action_details_from_flow_id(planned.name, rails.config.flows)
                self._judges.append((planned, action, params))

    # --- the protocol -------------------------------------------------------------------

    @property
    def profile_id(self) -> str:
        return self.plan.profile.id

    @property
    def profile_name(self) -> str:
        return self._name

    @property
    def profile_hash(self) -> str | None:
        return self.plan.profile.content_hash

    @property
    def checks_anything(self) -> bool:
        return self.plan.checks_anything

    async def check_input(self, history: Sequence[GuardMessage], text: str) -> GuardDecision:
        # Input rails read the message alone. Handing NeMo the history as well would
        # cost more at every step of its Colang runtime (it replays every event of the
        # conversation) and no rail of the registry looks at earlier turns.
        return await self._check(Stage.INPUT, text, "")

    async def check_output(self, history: Sequence[GuardMessage], text: str) -> GuardDecision:
        """The output rails over a whole reply, for replies that were not streamed."""
        return await self._check(Stage.OUTPUT, text, _last_user_message(history))

    async def guard_output(
        self,
        history: Sequence[GuardMessage],
        stream: AsyncIterator[str],
        *,
        pace: Pace | None = None,
    ) -> AsyncIterator[OutputEvent]:
        releaser = OutputReleaser([d.stream for d in self._direct[Stage.OUTPUT]], self._dispatch)
        released = self._released(releaser, stream)
        if not self._nemo[Stage.OUTPUT]:
            async for event in released:
                yield event
            return
        user_message = _last_user_message(history)
        if self._judges:
            stream_first = self.plan.profile.streaming.stream_first

            async def judge(text: str) -> OutputBlocked | None:
                return await self._judge(text, user_message)

            async for event in judged(released, judge, stream_first=stream_first, pace=pace):
                yield event
            return
        async for event in self._through_nemo(released, user_message):
            yield event

    async def _judge(self, text: str, user_message: str) -> OutputBlocked | None:
        """The content-safety output rails on `text` (the reply so far), dispatched as
        NeMo dispatches its streaming output rails; the first that blocks (or fails)
        stops the reply."""
        from nemoguardrails.actions.rail_outcome import RailDecision, RailOutcome

        started = time.perf_counter()
        trace: list[RailTrace] = []
        for planned, action, flow_params in self._judges:
            values = {"$bot_message": text, "$user_message": user_message}
            params = {
                k: values.get(v, v) if isinstance(v, str) else v for k, v in flow_params.items()
            }
            params["context"] = {RECORDER_KEY: VerdictRecorder()}
            began = time.perf_counter()
            try:
                result, status = await self._dispatcher.execute_action(action, params)
            except Exception:
                log.exception("the %s rail failed", planned.name)
                result, status = None, "failed"
            ok = status == "success" and isinstance(result, RailOutcome)
            failed = not ok or result.failed
            outcome = "failed" if failed else str(result.decision.value)
            trace.append(RailTrace(planned.name, outcome, (time.perf_counter() - began) * 1000))
            if failed or result.decision is RailDecision.BLOCK:
                decision = self._nemo_decision(
                    Stage.OUTPUT,
                    planned.name,
                    outcome=result,
                    failed=failed,
                    trace=trace,
                    started=started,
                )
                return OutputBlocked(decision)
        return None

    # --- the direct lane -----------------------------------------------------------------

    async def _dispatch(self, rail: StreamRail, text: str) -> RailRun:
        from nemoguardrails.actions.rail_outcome import RailOutcome

        direct = self._by_stream[rail.name]
        params = {k: text if v in _VARIABLES else v for k, v in direct.params.items()}
        started = time.perf_counter()
        try:
            result, status = await self._dispatcher.execute_action(direct.action, params)
        except Exception:
            log.exception("the %s rail failed", rail.name)
            result, status = None, "failed"
        latency = (time.perf_counter() - started) * 1000.0
        ok = status == "success" and isinstance(result, RailOutcome) and not result.failed
        return RailRun(result if ok else None, latency)

    async def _check(self, stage: Stage, text: str, user_message: str) -> GuardDecision:
        started = time.perf_counter()
        trace: list[RailTrace] = []
        current = text
        masked: list[str] = []
        masking: list[_DirectRail] = []
        for direct in self._direct[stage]:
            run = await self._dispatch(direct.stream, current)
            trace.append(RailTrace(direct.stream.name, _outcome_name(run), run.latency_ms))
            if run.failed:
                sentence = explain.failed(stage, direct.stream.title)
                return self._decision(
                    stage, sentence, rail=direct.stream, trace=trace, started=started
                )
            labels = [f.label for f in findings_of(run.outcome.metadata) or ()]
            if run.outcome.is_blocked:
                sentence = explain.blocked(stage, self._name, labels)
                return self._decision(
                    stage, sentence, rail=direct.stream, trace=trace, started=started
                )
            if run.outcome.is_transform:
                current = next(iter(run.outcome.transform_text.values()))
                masked += labels
                masking.append(direct)
        if self._nemo[stage]:
            checked = await self._nemo_check(stage, current, user_message, trace)
            if isinstance(checked, GuardDecision):
                return checked
            if checked != current:  # a flow of the profile's own rewrote the text
                current = checked
                masked.append("text the profile's own rail chose")
        latency = (time.perf_counter() - started) * 1000.0
        if current != text:
            first = masking[0].stream if masking else None
            return GuardDecision(
                Verdict.MASKED,
                stage,
                self.profile_id,
                explain.masked(stage, masked),
                rail=first.name if first else None,
                category=first.category if first else None,
                latency_ms=latency,
                rewritten=current,
                masked=tuple(dict.fromkeys(masked)),
                trace=tuple(trace),
            )
        count = len(self.plan.rails(stage))
        return GuardDecision(
            Verdict.ALLOWED,
            stage,
            self.profile_id,
            explain.allowed(stage, self._name, count),
            latency_ms=latency,
            trace=tuple(trace),
        )

    def _decision(
        self,
        stage: Stage,
        explanation: str,
        *,
        rail: StreamRail,
        trace: list[RailTrace],
        started: float,
    ) -> GuardDecision:
        return GuardDecision(
            Verdict.BLOCKED,
            stage,
            self.profile_id,
            explanation,
            rail=rail.name,
            category=rail.category,
            latency_ms=(time.perf_counter() - started) * 1000.0,
            trace=tuple(trace),
        )

    # --- the NeMo lane ------------------------------------------------------------------

    async def _nemo_check(
        self, stage: Stage, text: str, user_message: str, trace: list[RailTrace]
    ) -> GuardDecision | str:
        """NeMo's Colang runtime over the NeMo-lane rails: the same call `check_async`
        makes, with the activated-rails log it throws away. Returns the (possibly
        rewritten) text, or the decision if a rail stopped it."""
        started = time.perf_counter()
        messages = [{"role": "user", "content": text}]
        if stage is Stage.OUTPUT:
            messages = [
                {"role": "user", "content": user_message},
                {"role": "assistant", "content": text},
            ]
        options = {"rails": [stage.value], "log": {"activated_rails": True}}
        try:
            response = await self._rails.generate_async(messages=messages, options=options)
        except Exception:
            log.exception("NeMo Guardrails failed on the %s rails", stage.value)
            rail = self._nemo[stage][0]
            return self._nemo_decision(
                stage, rail.name, outcome=None, failed=True, trace=trace, started=started
            )
        finally:
            # NeMo caches the events of every conversation it has seen, forever; the
            # rails here never need them again.
            self._rails.events_history_cache.clear()
        for activated in response.log.activated_rails if response.log else []:
            if activated.type != stage.value:
                continue
            outcome = next(
                (
                    a.return_value
                    for a in activated.executed_actions
                    if hasattr(a.return_value, "decision")
                ),
                None,
            )
            failed = outcome is None or bool(getattr(outcome, "failed", False))
            decision = "failed" if failed and activated.stop else "allow"
            if outcome is not None and not failed:
                decision = str(outcome.decision.value)
            trace.append(RailTrace(activated.name, decision, (activated.duration or 0.0) * 1000))
            if activated.stop:
                return self._nemo_decision(
                    stage,
                    activated.name,
                    outcome=outcome,
                    failed=failed,
                    trace=trace,
                    started=started,
                )
        content = response.response[-1].get("content", "") if response.response else ""
        return content if isinstance(content, str) and content else text

    def _nemo_decision(
        self,
        stage: Stage,
        rail_name: str,
        *,
        outcome: Any,
        failed: bool,
        trace: list[RailTrace],
        started: float,
        categories: Sequence[str] | None = None,
        judgement: Judgement | None = None,
    ) -> GuardDecision:
        planned = next((r for r in self._nemo[stage] if r.name == rail_name), None)
        title = planned.title if planned else f"the rail '{rail_name}'"
        library = planned.flow.library if planned else None
        category = library.spec.category if library else None
        metadata = getattr(outcome, "metadata", None) or {}
        found = categories if categories is not None else metadata.get(CATEGORIES_KEY)
        findings = findings_of(metadata)
        judged_by = None  # only a content-safety verdict has a judge
        if failed:
            sentence = explain.failed(stage, title)
        elif found is not None:
            judged_by = judgement
            if judged_by is None and isinstance(metadata.get(JUDGEMENT_KEY), Judgement):
                judged_by = metadata[JUDGEMENT_KEY]
            sentence = explain.flagged(stage, found, judged_by)
            category = found[0].replace("_", " ") if found else UNSAFE_CONTENT
        elif findings:
            sentence = explain.blocked(stage, self._name, [f.label for f in findings])
        else:
            sentence = explain.blocked_by_flow(stage, rail_name)
        return GuardDecision(
            Verdict.BLOCKED,
            stage,
            self.profile_id,
            sentence,
            rail=rail_name,
            category=category,
            latency_ms=(time.perf_counter() - started) * 1000.0,
            trace=tuple(trace),
            judgement=judged_by,
        )

    # --- streaming ----------------------------------------------------------------------

    async def _released(
        self, releaser: OutputReleaser, stream: AsyncIterator[str]
    ) -> AsyncIterator[OutputEvent]:
        async for text in stream:
            event = self._event(await releaser.feed(text))
            if event is not None:
                yield event
                if isinstance(event, OutputBlocked):
                    return
        event = self._event(await releaser.finish())
        if event is not None:
            yield event

    def _event(self, release: Release | None) -> OutputEvent | None:
        if release is None:
            return None
        if isinstance(release, Stopped):
            rail = release.rail
            sentence = (
                explain.failed(Stage.OUTPUT, rail.title)
                if release.failed
                else explain.blocked(Stage.OUTPUT, self._name, release.labels)
            )
            outcome = "failed" if release.failed else "block"
            return OutputBlocked(
                GuardDecision(
                    Verdict.BLOCKED,
                    Stage.OUTPUT,
                    self.profile_id,
                    sentence,
                    rail=rail.name,
                    category=rail.category,
                    latency_ms=release.latency_ms,
                    trace=(RailTrace(rail.name, outcome, release.latency_ms),),
                )
            )
        assert isinstance(release, Cleared)
        if not release.text:
            return None
        if not release.masked:
            return PassedText(release.text)
        first = release.masking_rails[0]
        decision = GuardDecision(
            Verdict.MASKED,
            Stage.OUTPUT,
            self.profile_id,
            explain.masked(Stage.OUTPUT, release.masked),
            rail=first.name,
            category=first.category,
            latency_ms=release.latency_ms,
            rewritten=release.text,
            masked=release.masked,
            trace=tuple(RailTrace(r.name, "transform", 0.0) for r in release.masking_rails),
        )
        return PassedText(release.text, decision)

    async def _through_nemo(
        self, released: AsyncIterator[OutputEvent], user_message: str
    ) -> AsyncIterator[OutputEvent]:
        """The cleared pieces through NeMo's streaming output rails, which yield the same
        pieces back (after or before checking them, as the profile's stream_first says)
        or, instead, a JSON violation chunk."""
        waiting: deque[PassedText] = deque()
        stopped: list[OutputBlocked] = []
        handed_at = time.perf_counter()

        async def pieces() -> AsyncIterator[str]:
            nonlocal handed_at
            async for event in released:
                if isinstance(event, OutputBlocked):
                    stopped.append(event)
                    return
                waiting.append(event)
                handed_at = time.perf_counter()
                yield event.text

        recorder = VerdictRecorder()
        messages = [
            {"role": "context", "content": {RECORDER_KEY: recorder}},
            {"role": "user", "content": user_message},
        ]
        try:
            async for chunk in self._rails.stream_async(messages=messages, generator=pieces()):
                if waiting and chunk == waiting[0].text:
                    yield waiting.popleft()
                    continue
                yield self._violation(chunk, recorder, handed_at)
                return
        except Exception:
            log.exception("NeMo Guardrails failed on the streaming output rails")
            rail = self._nemo[Stage.OUTPUT][0]
            decision = self._nemo_decision(
                Stage.OUTPUT, rail.name, outcome=None, failed=True, trace=[], started=handed_at
            )
            yield OutputBlocked(decision)
            return
        if stopped:
            yield stopped[0]

    def _violation(self, chunk: str, recorder: VerdictRecorder, since: float) -> OutputBlocked:
        """NeMo's mid-stream stop: {"error": {"type": "guardrails_violation" or
        "internal_error", "param": <flow>, ...}}. Anything else that does not match the
        piece handed in is treated as a failure too: the output rails fail closed."""
        error: dict[str, Any] = {}
        if chunk.startswith("{"):
            try:
                payload = json.loads(chunk)
            except ValueError:
                payload = None
            if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
                error = payload["error"]
        kind = error.get("type")
        rail = str(error.get("param") or self._nemo[Stage.OUTPUT][0].name)
        failed = kind not in _VIOLATIONS or kind == "internal_error"
        categories = recorder.categories if recorder.categories else None
        decision = self._nemo_decision(
            Stage.OUTPUT,
            rail,
            outcome=None,
            failed=failed,
            trace=[],
            started=since,
            categories=categories,
            judgement=recorder.judgement,
        )
        trace = (RailTrace(rail, "failed" if failed else "block", decision.latency_ms),)
        return OutputBlocked(replace(decision, trace=trace))


def _is_model_rail(rail: PlannedRail) -> bool:
    library = rail.flow.library
    return library is not None and library.spec.role == SAFETY_ROLE


def _last_user_message(history: Sequence[GuardMessage]) -> str:
    return next((m.content for m in reversed(history) if m.role == "user"), "")
