"""Errors sorted by who is to blame.

A `BastionError` is something the user can cause and fix (a missing model, a bad
settings file, a message too long for the model): it carries one plain sentence that
says what happened and what to do, and is shown as such. Anything else is a bug and
reaches the user as a crash report, with the traceback in the log.
"""


class BastionError(Exception):
    """A problem the user can understand and act on; `str()` is the sentence shown."""


class SettingsError(BastionError):
    """The settings file cannot be read or does not validate."""


class ModelNotFoundError(BastionError):
    """No registered model has that id and no file exists at that path."""


class ModelLoadError(BastionError):
    """llama.cpp could not load the file (not a GGUF, corrupt, unsupported, out of memory)."""


class ContextOverflowError(BastionError):
    """A single message does not fit in the model's context window."""


class ModelHostCrashedError(BastionError):
    """The model host process died while it was generating."""


class StarterModelError(BastionError):
    """The bundled starter model could not be written to the models folder."""


class GuardProfileError(BastionError):
    """A guardrail profile that cannot be used: unknown, invalid, or missing a model it
    requires."""


class OutputFormatError(BastionError):
    """A requested output format (a JSON Schema) that llama.cpp cannot turn into a
    grammar."""
