"""Bastion's core: everything that runs without Qt (settings, paths, inference, chat)."""
