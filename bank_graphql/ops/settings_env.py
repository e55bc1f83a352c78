"""Defaults of command-line flags read from the environment."""

import os


def env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}
