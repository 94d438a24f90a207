"""The NeMo Guardrails engine: each profile compiled into one `LLMRails` per profile and
model set, cached, and the runtime ChatService uses.

    engine = GuardEngine(ProfileLibrary(user_dir=...))
    runtime = engine.runtime("standard")          # or: await engine.open("standard")
    service = ChatService(store, models, resolve_model, guard=runtime)

Why the rails run in two lanes. Measured with nemoguardrails 0.24.1 on a shared 2-core
machine (benchmarks/bench_guardrails.py reports the numbers again each run):

- NeMo's Colang 1.0 runtime recomputes the state of every flow from the whole event
  history at each step (`Runtime.generate_events` -> `compute_next_steps` ->
  `compute_next_state` for every event, with expressions compiled by simpleeval each
  time). One `check_async` with a single trivial input rail takes about 9-17 ms; each
  further rail adds more than the last (four rails about 40 ms, eight about 120 ms),
  and ten earlier turns of history add about 60 ms. Standard's budget is +15 ms on the
  time to the first token, for the input check and the output path together.
- NeMo's streaming output rails (`LLMRails._run_output_rails_in_streaming`) skip the
  Colang runtime: for each chunk they look up every output flow's action
  (`get_action_details_from_flow_id`) and call it through the `ActionDispatcher`
  (about 30 us per flow and chunk, measured). They need no LLM. But the `RollingBuffer`
  yields nothing until `chunk_size` tokens have arrived, even with `stream_first`, and a
  TRANSFORM outcome is ignored while streaming, so a secret in a reply cannot be masked.

So Bastion's model-free rails run the way NeMo runs streaming output rails: the
registry action of the rail's flow is dispatched through this LLMRails'
`ActionDispatcher`, and its `RailOutcome` (ALLOW, BLOCK, TRANSFORM) applied, without the
Colang interpreter: on input before the model sees the message, on output on every
piece the releaser (streaming.py) clears, before it is shown, so a token that cannot be
part of a secret is shown the moment it arrives. The other rails (content safety with
the safety model, flows a profile writes in its own Colang) run through NeMo proper:
`generate_async` with exactly the options `check_async(rail_types=[...])` uses plus the
activated-rails log that `check_async` drops (it is where each rail's decision and
timing are), and `stream_async(messages=..., generator=...)` with the profile's
streaming output rails (`chunk_size`, `context_size`, `stream_first`) over the cleared
pieces, except that the content-safety rail alone on a streamed reply is dispatched at
sentence boundaries (judged.py), because the rolling buffer would hold every reply's
first `chunk_size` pieces back. tests/guardrails/test_engine_lanes.py checks that the
direct lane decides exactly what NeMo's Colang runtime decides, rail by rail, for every
built-in profile.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bastion_guardrails.colang_library import bastion_colang
from bastion_guardrails.decisions import Stage
from bastion_guardrails.explain import ProfileStatus, profile_status
from bastion_guardrails.library import ProfileLibrary
from bastion_guardrails.models import ModelSet
from bastion_guardrails.nemo_runtime import NemoProfileRuntime
from bastion_guardrails.plan import Lane, ProfilePlan, plan_profile
from bastion_guardrails.problems import GuardrailsError, ProfileError, ProfileProblem
from bastion_guardrails.profile import Profile, Strictness
from bastion_guardrails.rail_actions import make_actions
from bastion_guardrails.runtime import GuardProfileRuntime, OffProfile

log = logging.getLogger(__name__)

# Building LLMRails touches process-wide state (NeMo's dispatcher class, below).
_BUILD_LOCK = threading.Lock()
T = TypeVar("T")


class ProfileUnavailableError(GuardrailsError):
    """The profile cannot run with the models installed (it requires one that is not)."""

    def __init__(self, status: ProfileStatus) -> None:
        super().__init__(status.sentence)
        self.status = status


def _quiet_nemo_logging() -> None:
    # NeMo logs every event it processes at INFO, chat text included ("Processing
    # event: {...}"), and a failing action's parameters (the text) at WARNING. Bastion's
    # log file takes INFO and never chat text: only NeMo's errors get through.
    logger = logging.getLogger("nemoguardrails")
    if logger.level < logging.ERROR:
        logger.setLevel(logging.ERROR)


def _without_working_directory_actions() -> None:
    """NeMo's ActionDispatcher imports `actions.py` and `actions/` from the current
    working directory (`load_actions_from_path(Path.cwd())`, after its own actions and
    before the config's), so starting Bastion in a folder that has them would run that
    code. Bastion builds its configs from content, never a folder, so that load never
    has anything of Bastion's to find: the dispatcher NeMo's runtime creates skips it.

    This replaces the class the runtime module instantiates, once, at import: changing
    the working directory instead (as before) changed it for the whole process, under
    the reader, highlighter and download threads, for as long as a build took."""
    from nemoguardrails.actions.action_dispatcher import ActionDispatcher
    from nemoguardrails.colang import runtime

    if getattr(runtime.ActionDispatcher, "skips_working_directory", False):
        return

    class _Dispatcher(ActionDispatcher):  # type: ignore[misc]
        skips_working_directory = True

        def load_actions_from_path(self, path: Path) -> None:
            # Only the working-directory load of __init__: its one call with Path.cwd()
            # while the dispatcher is being set up.
            if not getattr(self, "_cwd_skipped", False) and path == Path.cwd():
                self._cwd_skipped = True
                return
            super().load_actions_from_path(path)

    runtime.ActionDispatcher = _Dispatcher


def nemo_config(profile: Profile, plan: ProfilePlan, *, every_rail: bool = False) -> dict[str, Any]:
    """The NeMo config for a profile: its NeMo-lane rails in force (or, with
    `every_rail`, all rails in force, as written, for comparing the lanes)."""

    def flows(stage: Stage) -> list[str]:
        rails = plan.rails(stage) if every_rail else plan.rails(stage, Lane.NEMO)
        return [rail.name for rail in rails]

    streaming = profile.streaming
    return {
        "colang_version": "1.0",
        "models": [],
        "rails": {
            "input": {"flows": flows(Stage.INPUT)},
            "output": {
                "flows": flows(Stage.OUTPUT),
                "streaming": {
                    "enabled": True,
                    "chunk_size": streaming.chunk_size,
                    "context_size": streaming.context_size,
                    "stream_first": streaming.stream_first,
                },
            },
        },
        "prompts": list(profile.prompts),
    }


def _in_a_thread_of_its_own(build: Callable[[], T]) -> T:
    """Run `build` in a new thread with an event loop that is closed afterwards.

    `LLMRails.__init__` calls `get_or_create_event_loop()`, which, in a thread with no
    event loop, creates one, sets it and never closes it: every build would leak a
    loop and its self-pipe sockets. Given a loop of ours, it uses that instead."""
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            result.append(build())
        except BaseException as error:
            failure.append(error)
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    thread = threading.Thread(target=run, name="bastion-build-rails")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def build_rails(profile: Profile, plan: ProfilePlan, *, every_rail: bool = False) -> Any:
    """An LLMRails for the profile, with the registry's actions bound to its settings
    and models. It is built from the validated bytes, never from a folder path, so NeMo
    loads no config.py or actions.py of any profile."""
    from nemoguardrails import LLMRails, RailsConfig

    _quiet_nemo_logging()
    colang = "\n".join([bastion_colang(), *(text for _, text in profile.colang)])
    config_data = nemo_config(profile, plan, every_rail=every_rail)

    def build() -> Any:
        with warnings.catch_warnings():
            # nemoguardrails 0.24.1 validates every config with a model validator of its
            # jailbreak-detection settings that reads the deprecated field `nim_url`
            # itself (library/jailbreak_detection/rail_config.py,
            # `migrate_deprecated_fields`), so pydantic warns on every config, whatever
            # it holds. Only that warning, only here.
            warnings.filterwarnings(
                "ignore", message="Use 'nim_base_url' instead", category=DeprecationWarning
            )
            config = RailsConfig.from_content(colang_content=colang, config=config_data)
        return LLMRails(config)

    with _BUILD_LOCK:
        _without_working_directory_actions()
        try:
            rails = _in_a_thread_of_its_own(build)
        except Exception as error:
            problem = ProfileProblem("config.yml", f"NeMo Guardrails refused it: {error}")
            raise ProfileError(profile.bundle.source, [problem]) from error
    strict = profile.manifest.strictness is Strictness.STRICT
    for name, action in make_actions(profile.settings, plan.models, strict=strict).items():
        rails.register_action(action, name)
    return rails


class GuardEngine:
    """Profiles by id, compiled once per profile content and model set."""

    def __init__(self, library: ProfileLibrary | None = None) -> None:
        self.library = library or ProfileLibrary()
        self._runtimes: dict[tuple[str, tuple[str, ...]], GuardProfileRuntime] = {}
        self._lock = threading.Lock()

    def status(self, profile_id: str, models: ModelSet | None = None) -> ProfileStatus:
        """Which checks the profile has in force with these models (no NeMo needed)."""
        return profile_status(plan_profile(self.library.get(profile_id), models or ModelSet()))

    def runtime(self, profile_id: str, models: ModelSet | None = None) -> GuardProfileRuntime:
        """The runtime for a profile id. Raises ProfileNotFoundError, ProfileError (an
        invalid profile) or ProfileUnavailableError (a required model is missing)."""
        return self.runtime_for(self.library.get(profile_id), models)

    async def open(self, profile_id: str, models: ModelSet | None = None) -> GuardProfileRuntime:
        """`runtime`, off the event loop: the first build imports NeMo Guardrails and
        compiles the profile (about two seconds on a slow machine)."""
        return await asyncio.to_thread(self.runtime, profile_id, models)

    def runtime_for(self, profile: Profile, models: ModelSet | None = None) -> GuardProfileRuntime:
        models = models or ModelSet()
        plan = plan_profile(profile, models)
        status = profile_status(plan)
        if not status.can_run:
            raise ProfileUnavailableError(status)
        if plan.is_off and profile.id == OffProfile.profile_id:
            return OffProfile(profile.content_hash)
        key = (profile.content_hash, models.cache_key)
        with self._lock:
            runtime = self._runtimes.get(key)
            if runtime is None:
                runtime = NemoProfileRuntime(plan, build_rails(profile, plan))
                self._runtimes[key] = runtime
                log.info(
                    "guardrail profile %s ready: %d checks in force, %d not",
                    profile.id,
                    len(status.active),
                    len(status.missing),
                )
        return runtime
