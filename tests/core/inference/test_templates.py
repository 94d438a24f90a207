from pathlib import Path

import pytest

from bastion_desktop.core.errors import BastionError
from bastion_desktop.core.inference.templates import (
    ChatTemplateError,
    GemmaTurnTemplate,
    PlainTranscriptTemplate,
    choose_template,
)
from bastion_desktop.core.inference.types import ChatMessage, Role

CONVERSATION = [
    ChatMessage(Role.SYSTEM, "Answer in French."),
    ChatMessage(Role.USER, "Hello"),
    ChatMessage(Role.ASSISTANT, "Bonjour"),
    ChatMessage(Role.USER, "How are you?"),
]

# A ChatML template of the kind Qwen and many fine-tunes embed.
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def test_gemma_turn_format_folds_the_system_prompt_into_the_first_user_turn() -> None:
    prompt = GemmaTurnTemplate().render(CONVERSATION)
    assert prompt.text == (
        "<start_of_turn>user\nAnswer in French.\n\nHello<end_of_turn>\n"
        "<start_of_turn>model\nBonjour<end_of_turn>\n"
        "<start_of_turn>user\nHow are you?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    assert prompt.stops == ("<end_of_turn>",)


def test_files_without_a_template_fall_back_by_architecture() -> None:
    gemma = choose_template({"general.architecture": "gemma3"}, "<bos>", "<eos>")
    other = choose_template({"general.architecture": "llama"}, "<s>", "</s>")
    assert isinstance(gemma, GemmaTurnTemplate)
    assert isinstance(other, PlainTranscriptTemplate)
    assert other.render(CONVERSATION).text.endswith("User: How are you?\nAssistant:")


def test_embedded_template_is_used_when_it_renders() -> None:
    metadata = {"general.architecture": "qwen2", "tokenizer.chat_template": CHATML}
    template = choose_template(metadata, "", "<|im_end|>")
    assert template.name == "embedded"
    text = template.render(CONVERSATION).text
    assert text.startswith("<|im_start|>system\nAnswer in French.<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")


def test_a_template_without_a_system_role_gets_the_system_prompt_in_the_first_turn() -> None:
    no_system = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"
    )
    template = choose_template({"tokenizer.chat_template": no_system}, "", "")
    assert template.name == "embedded"
    assert template.render(CONVERSATION).text == (
        "[user]Answer in French.\n\nHello[assistant]Bonjour[user]How are you?"
    )


def test_a_template_that_refuses_a_conversation_says_so() -> None:
    alternating = (
        "{% if messages|length > 2 %}{{ raise_exception('Roles must alternate') }}{% endif %}"
        "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    )
    template = choose_template({"tokenizer.chat_template": alternating}, "", "")
    assert template.name == "embedded"
    with pytest.raises(ChatTemplateError, match="Roles must alternate") as caught:
        template.render(CONVERSATION)
    assert isinstance(caught.value, BastionError)


def _hostile_templates(marker: Path) -> list[str]:
    command = f"touch {marker}"
    return [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        f"{{{{ cycler.__init__.__globals__.os.popen('{command}').read() }}}}",
        f"{{{{ lipsum.__globals__['os'].popen('{command}').read() }}}}",
        f"{{{{ joiner.__init__.__globals__['os'].system('{command}') }}}}",
        "{{ self.__init__.__globals__.__builtins__.open('/etc/passwd').read() }}",
        "{% for c in [].__class__.__base__.__subclasses__() %}"
        "{% if c.__name__ == 'catch_warnings' %}"
        f"{{{{ c()._module.__builtins__['__import__']('os').system('{command}') }}}}"
        "{% endif %}{% endfor %}",
        "{% include '/etc/passwd' %}",
        "{{ namespace.__init__.__globals__['sys'].modules['os'].system('" + command + "') }}",
    ]


@pytest.mark.log_warnings("a template that falls back is logged as a warning")
def test_hostile_templates_run_nothing_and_fall_back(tmp_path: Path) -> None:
    marker = tmp_path / "escaped"
    for hostile in _hostile_templates(marker):
        metadata = {"general.architecture": "gemma3", "tokenizer.chat_template": hostile}
        template = choose_template(metadata, "<bos>", "<eos>")
        assert template.name == "gemma", hostile
        assert "failed to render" in template.source
        template.render(CONVERSATION)
        assert not marker.exists(), f"template escaped the sandbox: {hostile}"
