"""The models the guardrail profiles' rails use, on model hosts of their own.

    guard_models = GuardModels(registry, load_options)
    models = guard_models.model_set(chat_model_id)   # a ModelSet for GuardEngine
    ...
    await guard_models.aclose()                       # with the app

The safety model is the newest installed model with the role "safety" (`bastion models
import PATH --role safety`, or a catalog download) whose family Bastion knows how to
prompt (Llama Guard 3, ShieldGemma: `bastion_guardrails.safety.family`). It runs in a
`ModelHost` of its own, a child process apart from the chat model's, so a check of a
reply never waits for, or disturbs, the reply being generated. Without one, an
instruction-tuned chat model checks content itself ("self-check") through a second
host on the same file (llama.cpp maps the file, so the weights are shared by the two
processes through the page cache; only the context is paid twice). A base chat model,
such as the starter, is never used for that: its verdicts would be noise.

Hosts start on the first check, not here: building a model set reads only metadata.
The guardrail engine caches one LLMRails per profile and model set, bound to the
safety-model objects, so `model_set` returns the same objects for as long as the
installed models stay the same.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion_desktop.core.errors import BastionError
from bastion_desktop.core.hub.gguf_metadata import read_gguf_metadata
from bastion_desktop.core.inference.host import ModelHost
from bastion_desktop.core.inference.types import (
    ChatMessage,
    GenerationFinished,
    LoadOptions,
    Role,
    SamplingParams,
    TokenText,
)
from bastion_desktop.core.installed_models import ModelRegistry, RegisteredModel
from bastion_guardrails.models import SAFETY_ROLE, JudgeReport, ModelSet, SafetyDownload
from bastion_guardrails.safety import (
    AnswerScore,
    GuardFamily,
    PromptedSafetyModel,
    detect_family,
    is_instruction_tuned,
)
from bastion_guardrails.safety.calibration import (
    Calibration,
    calibrate,
    calibration_set,
    prompts_version,
)

log = logging.getLogger(__name__)

PROVIDER = "bastion-model-host"
# Guard answers are a few tokens; NeMo's callers may ask for more.
DEFAULT_MAX_TOKENS = 32
KNOWN_FAMILIES = "Llama Guard 3 and ShieldGemma"


class HostLLM:
    """NeMo Guardrails' `LLMModel` protocol (`nemoguardrails.types`) over a `ModelHost`.

    A string prompt is completed raw (guard models bring their own special tokens); a
    list of `ChatMessage` goes through the model's chat template. Decoding is always
    greedy: the callers want a verdict, not prose, and the same verdict every time."""

    def __init__(self, host: ModelHost, name: str) -> None:
        self.host = host
        self._name = name

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def provider_name(self) -> str | None:
        return PROVIDER

    @property
    def provider_url(self) -> str | None:
        return None

    async def generate_async(
        self, prompt: str | list[Any], *, stop: list[str] | None = None, **kwargs: Any
    ) -> Any:
        from nemoguardrails.types import LLMResponse, UsageInfo

        max_tokens = int(kwargs.get("max_tokens") or DEFAULT_MAX_TOKENS)
        stops = tuple(stop or ())
        if isinstance(prompt, str):
            result = await self.host.complete(prompt, max_tokens, stops)
            text, latency = result.text, result.latency_ms
            usage = (result.prompt_tokens, result.generated_tokens)
            finish = result.finish_reason
        else:
            finished = await self._chat(prompt, max_tokens, stops)
            text, latency = finished.text, finished.stats.total_ms
            usage = (finished.stats.prompt_tokens, finished.stats.generated_tokens)
            finish = finished.stats.finish_reason
        return LLMResponse(
            content=text,
            model=self._name,
            finish_reason="stop" if finish == "stop" else "length",
            usage=UsageInfo(input_tokens=usage[0], output_tokens=usage[1], total_tokens=sum(usage)),
            provider_metadata={"latency_ms": latency},
        )

    async def score(self, prompt: str | list[Any], answers: Sequence[Sequence[str]]) -> AnswerScore:
        """The first answer token's probability for each class of answer words (one
        forward pass on the host, reusing the prefix its context already holds)."""
        if not isinstance(prompt, str):
            prompt = [_chat_message(m) for m in prompt]
        result = await self.host.score(prompt, answers)
        return AnswerScore(result.masses, result.prompt_tokens, result.evaluated_tokens)

    async def stream_async(
        self, prompt: str | list[Any], *, stop: list[str] | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        """The whole answer as one chunk: a verdict is only read when it is complete."""
        from nemoguardrails.types import LLMResponseChunk

        response = await self.generate_async(prompt, stop=stop, **kwargs)
        yield LLMResponseChunk(
            delta_content=response.content,
            model=response.model,
            finish_reason=response.finish_reason,
            usage=response.usage,
        )

    async def _chat(
        self, messages: Sequence[Any], max_tokens: int, stops: tuple[str, ...]
    ) -> GenerationFinished:
        chat = [_chat_message(m) for m in messages]
        params = SamplingParams(
            temperature=0.0,
            top_k=1,
            top_p=1.0,
            min_p=0.0,
            repeat_penalty=1.0,
            max_tokens=max_tokens,
            stop=stops,
        )
        finished: GenerationFinished | None = None
        async for event in self.host.stream(chat, params):
            if isinstance(event, GenerationFinished):
                finished = event
            elif not isinstance(event, TokenText):
                continue  # a trimming notice: the check reads what fits
        assert finished is not None  # stream() always ends with it, or raises
        return finished


def _chat_message(message: Any) -> ChatMessage:
    """NeMo's ChatMessage (or a role/content mapping) as the host's."""
    if isinstance(message, dict):
        role, content = message.get("role"), message.get("content")
    else:
        role, content = getattr(message, "role", None), getattr(message, "content", None)
    role = getattr(role, "value", role)
    return ChatMessage(Role(str(role)), content if isinstance(content, str) else "")


@dataclass(frozen=True)
class _Names:
    """What the guardrail layer needs to know about a model, from its GGUF and entry."""

    names: tuple[str | None, ...]
    architecture: str | None
    finetune: str | None
    has_chat_template: bool


def _names(model: RegisteredModel) -> _Names:
    names: list[str | None] = [model.name, model.file, model.path.name, model.repo]
    architecture = model.architecture
    finetune = None
    has_template = bool(model.has_chat_template)
    try:
        metadata = read_gguf_metadata(model.path)
    except (BastionError, OSError):
        pass  # the load itself will say what is wrong with the file
    else:
        for key in ("general.name", "general.basename"):
            value = metadata.values.get(key)
            names.append(value if isinstance(value, str) else None)
        value = metadata.values.get("general.finetune")
        finetune = value if isinstance(value, str) else None
        architecture = metadata.architecture
        has_template = metadata.has_chat_template
    return _Names(tuple(names), architecture, finetune, has_template)


def _downloads() -> tuple[SafetyDownload, ...]:
    """The smallest safety models of the catalog, for the sentence that suggests one."""
    from bastion_desktop.core.hub.catalog import load_catalog

    guards = sorted(load_catalog().by_role("safety"), key=lambda m: m.parameters_b)
    return tuple(SafetyDownload(m.name, m.id) for m in guards[:2])


class Calibrations:
    """Each judge's calibration, once per model file: a small JSON file in the app's
    data folder, keyed by the file's sha256, the way it judges (its family, or
    self-check), the prompts' version and the calibration set's version. It holds
    probabilities for Bastion's own test requests, never chat text."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._known: dict[str, Calibration] | None = None

    @staticmethod
    def key(model: RegisteredModel, judge: PromptedSafetyModel) -> str:
        kind = judge.family.value if judge.family else "self-check"
        version = f"p{prompts_version()}s{calibration_set().version}"
        return f"{model.sha256}:{kind}:{version}"

    def _read(self) -> dict[str, Calibration]:
        if self._known is None:
            self._known = {}
            try:
                data = json.loads(self.path.read_text("utf-8")) if self.path else {}
                for key, value in data.items():
                    self._known[key] = Calibration.from_json(value)
            except FileNotFoundError:
                pass
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
                # Unreadable: calibrate again rather than trust it.
                log.warning("judge calibrations unreadable (%s); they will be redone", error)
                self._known = {}
        return self._known

    def get(self, key: str) -> Calibration | None:
        return self._read().get(key)

    def put(self, key: str, calibration: Calibration) -> None:
        known = self._read()
        known[key] = calibration
        if self.path is None:
            return
        data = {k: v.to_json() for k, v in known.items()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps(data, indent=1), "utf-8")
        partial.replace(self.path)


def judge_report(judge: PromptedSafetyModel, calibration: Calibration) -> JudgeReport:
    return JudgeReport(
        judge.name,
        judge.is_self_check,
        calibration.qualified,
        calibration.benign_passed,
        calibration.harmful_blocked,
        calibration.threshold,
        calibration.strict_threshold,
        len(calibration.benign) + len(calibration.harmful),
    )


class GuardModels:
    """The safety model (or self-check) for the guardrail profiles, with its hosts.

    Use from the engine loop; `aclose` stops the hosts (they start on first use).
    A judge is used only once it has passed its calibration (`prepare` runs it, once
    per model file; `model_set` reads the results)."""

    def __init__(
        self,
        registry: ModelRegistry,
        load_options: LoadOptions | None = None,
        *,
        wanted: str | None = None,
        calibrations: Path | None = None,
    ) -> None:
        self.registry = registry
        self.load_options = load_options or LoadOptions()
        # The safety model an administrator asks for (policy SafetyModel): a Hub
        # repository or a file's sha256. None: the newest one installed.
        self.wanted = wanted
        self.calibrations = Calibrations(calibrations)
        self._hosts: dict[tuple[str, str], ModelHost] = {}
        self._judges: dict[str, PromptedSafetyModel] = {}
        self._entries: dict[str, RegisteredModel] = {}  # by judge model_id
        # Judges whose calibration failed this run (the model did not load...): why.
        self._untestable: dict[str, str] = {}
        self._sets: dict[tuple[str, ...], ModelSet] = {}
        self._calibrating = asyncio.Lock()

    def safety_entry(self) -> RegisteredModel | None:
        """The newest installed safety model whose file is present (the one the policy
        names, when it names one: if it is not installed, none is used, and the status
        sentence says a safety model is missing)."""
        installed = [m for m in self.registry.list() if m.role == SAFETY_ROLE]
        if self.wanted:
            wanted = self.wanted.lower()
            installed = [
                m for m in installed if wanted in ((m.repo or "").lower(), m.sha256.lower())
            ]
        return next((m for m in reversed(installed) if m.path.is_file()), None)

    def model_set(self, chat_model_id: str | None = None) -> ModelSet:
        """The models the rails may use, with `chat_model_id` (a registered id) as the
        chat model that may check itself when no safety model is installed."""
        safety = self.safety_entry()
        chat = self.registry.get(chat_model_id) if chat_model_id else None
        key = (
            f"{safety.id}:{safety.sha256}" if safety else "",
            f"{chat.id}:{chat.sha256}" if chat else "",
        )
        cached = self._sets.get(key)
        if cached is None or cached.pending_judge:
            cached = self._sets[key] = self._build(safety, chat)
        return cached

    async def prepare(
        self,
        chat_model_id: str | None = None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> ModelSet:
        """Calibrate the judge the model set would use, if it has not been (once per
        model file: about a second per ten requests on a small model), and any judge
        after it when it does not qualify; returns the model set that follows.
        `progress(judge name, done, total)` as it goes."""
        async with self._calibrating:
            while True:
                models = self.model_set(chat_model_id)
                judge = models.safety
                if not models.pending_judge or not isinstance(judge, PromptedSafetyModel):
                    return models
                entry = self._entries[judge.model_id]
                log.info("calibrating %s as a content-safety judge", judge.name)

                def step(done: int, total: int, name: str = judge.name) -> None:
                    if progress is not None:
                        progress(name, done, total)

                try:
                    calibration = await calibrate(judge, progress=step)
                except BastionError as error:
                    # Not used this run (the status says why); tried again next run.
                    log.warning("could not test %s as a judge: %s", judge.name, error)
                    self._untestable[judge.model_id] = str(error).rstrip(".")
                    await judge.llm.host.close()  # type: ignore[attr-defined]
                    continue
                log.info(
                    "%s as a judge: benign passed %.0f%%, harmful blocked %.0f%% (%.1fs)",
                    judge.name,
                    calibration.benign_passed * 100,
                    calibration.harmful_blocked * 100,
                    calibration.seconds,
                )
                judge.calibration = calibration
                try:
                    self.calibrations.put(Calibrations.key(entry, judge), calibration)
                except OSError as error:  # a full or read-only disk: known for this run
                    log.warning("could not save the judge's calibration: %s", error)
                if not calibration.qualified:
                    await judge.llm.host.close()  # type: ignore[attr-defined]  # unused

    def _judge(self, model: RegisteredModel, family: GuardFamily | None) -> PromptedSafetyModel:
        """The judge object for a model, the same one for as long as the file is: the
        engine's compiled rails are bound to it."""
        use = "safety" if family else "self-check"
        host = self._host(model, use)
        key = f"{use}:{model.id}:{model.sha256}"
        judge = self._judges.get(key)
        if judge is None or judge.llm.host is not host:  # type: ignore[attr-defined]
            name = model.name
            judge = PromptedSafetyModel(HostLLM(host, model.id), family, name=name)
            self._judges[key] = judge
        self._entries[judge.model_id] = model
        if judge.calibration is None:  # never undone: prepare may have set it meanwhile
            judge.calibration = self.calibrations.get(Calibrations.key(model, judge))
        return judge

    def _build(self, safety: RegisteredModel | None, chat: RegisteredModel | None) -> ModelSet:
        downloads = _downloads()
        unusable = ""
        judges: list[JudgeReport] = []
        if safety is not None:
            names = _names(safety)
            family = detect_family(*names.names, architecture=names.architecture)
            if family is not None:
                model = self._judge(safety, family)
                failed = self._untestable.get(model.model_id)
                if failed:
                    unusable = (
                        f"the installed safety model, {safety.name}, could not be tested as a "
                        f"judge ({failed})"
                    )
                elif model.calibration is None:
                    return ModelSet(
                        model, safety.name, downloads=downloads, pending_judge=model.name
                    )
                else:
                    report = judge_report(model, model.calibration)
                    if report.qualified:
                        return ModelSet(model, safety.name, downloads=downloads, judges=(report,))
                    judges.append(report)
                    unusable = (
                        f"the installed safety model, {safety.name}, cannot tell harmful "
                        f"requests from harmless ones reliably ({model.calibration.summary()})"
                    )
            else:
                unusable = (
                    f"the installed safety model, {safety.name}, is not one Bastion knows how "
                    f"to ask (it knows {KNOWN_FAMILIES})"
                )
                log.warning("safety model %s: unknown guard family", safety.id)
        if chat is None:
            return ModelSet(unusable_safety=unusable, downloads=downloads, judges=tuple(judges))
        return self._self_check(chat, unusable, judges, downloads)

    def _self_check(
        self,
        chat: RegisteredModel,
        unusable: str,
        judges: list[JudgeReport],
        downloads: tuple[SafetyDownload, ...],
    ) -> ModelSet:
        """The chat model checking itself, if it can: instruction-tuned, and qualified
        (or not yet calibrated: `prepare` will)."""
        names = _names(chat)
        if not is_instruction_tuned(
            *names.names, finetune=names.finetune, has_chat_template=names.has_chat_template
        ):
            why = (
                f"the chat model, {chat.name}, is a base model (not instruction-tuned), so it "
                "cannot check them itself"
            )
            return ModelSet(
                no_self_check=why,
                unusable_safety=unusable,
                downloads=downloads,
                judges=tuple(judges),
            )
        model = self._judge(chat, None)
        failed = self._untestable.get(model.model_id)
        if failed:
            why = f"the chat model, {chat.name}, could not be tested as a judge ({failed})"
            return ModelSet(
                no_self_check=why,
                unusable_safety=unusable,
                downloads=downloads,
                judges=tuple(judges),
            )
        if model.calibration is not None:
            report = judge_report(model, model.calibration)
            judges.append(report)
            if not report.qualified:
                why = (
                    f"the chat model, {chat.name}, is too small to judge content safety "
                    f"reliably ({model.calibration.summary()})"
                )
                return ModelSet(
                    no_self_check=why,
                    unusable_safety=unusable,
                    downloads=downloads,
                    judges=tuple(judges),
                )
        return ModelSet(
            model,
            chat.name,
            self_check=True,
            unusable_safety=unusable,
            downloads=downloads,
            judges=tuple(judges),
            pending_judge=model.name if model.calibration is None else "",
        )

    def _host(self, model: RegisteredModel, use: str) -> ModelHost:
        key = (use, model.id)
        host = self._hosts.get(key)
        if host is None or host.path != model.path:
            host = self._hosts[key] = ModelHost(model.path, self.load_options, background=True)
        return host

    @property
    def hosts(self) -> tuple[ModelHost, ...]:
        return tuple(self._hosts.values())

    def use_options(self, options: LoadOptions) -> None:
        """Load the models with `options` (Settings saved): one loaded now is loaded
        again before its next check."""
        self.load_options = options
        for host in self._hosts.values():
            host.options = options

    async def aclose(self) -> None:
        """Stop every host this object started (an idempotent close, with the app)."""
        hosts, self._hosts = list(self._hosts.values()), {}
        self._sets.clear()
        self._judges.clear()
        for host in hosts:
            await host.close()


def build_model_set(
    registry: ModelRegistry,
    load_options: LoadOptions | None = None,
    chat_model_id: str | None = None,
) -> tuple[ModelSet, GuardModels]:
    """A model set and the `GuardModels` that owns its hosts (close it with the app)."""
    guard_models = GuardModels(registry, load_options)
    return guard_models.model_set(chat_model_id), guard_models


def family_of(model: RegisteredModel) -> GuardFamily | None:
    """The guard family of an installed model, or None (for `bastion models list`)."""
    names = _names(model)
    return detect_family(*names.names, architecture=names.architecture)
