"""Built-in guardrail profile bundles (package data)."""
