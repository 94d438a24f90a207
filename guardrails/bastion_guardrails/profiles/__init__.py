"""Built-in profile bundles (package data): one folder per profile, each a manifest
(profile.yml) and a NeMo Guardrails config (config.yml). They carry no code: every
rail they name is one of Bastion's registry rails."""
