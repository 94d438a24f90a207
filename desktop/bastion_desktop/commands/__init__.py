"""The `bastion` subcommands, each a thin layer over the core."""
