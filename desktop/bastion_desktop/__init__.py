"""Bastion: private desktop chat with local open-weight models and built-in guardrails."""

from typing import Any


def __getattr__(name: str) -> Any:
    # Looked up on demand: reading the installed metadata costs tens of milliseconds,
    # and every model host process imports this package too.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("bastion")
        except PackageNotFoundError:  # a source tree that was never installed
            return "0.0.0+unknown"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
