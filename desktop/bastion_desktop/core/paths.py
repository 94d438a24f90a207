"""Where Bastion keeps its files.

The folders come from platformdirs (the per-OS conventions); `BASTION_HOME` puts all
of them under one folder instead, for tests and portable installs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

APP_NAME = "Bastion"
HOME_VARIABLE = "BASTION_HOME"
# A file holding the history's passphrase, for machines without a keychain (scripts, CI).
PASSPHRASE_FILE_VARIABLE = "BASTION_PASSPHRASE_FILE"  # noqa: S105  (a variable's name)


@dataclass(frozen=True)
class AppPaths:
    data: Path
    models: Path
    config: Path
    logs: Path
    cache: Path

    @classmethod
    def discover(cls, environ: Mapping[str, str] | None = None) -> AppPaths:
        env = os.environ if environ is None else environ
        home = env.get(HOME_VARIABLE)
        if home:
            base = Path(home).expanduser().resolve()
            return cls(
                data=base / "data",
                models=base / "models",
                config=base / "config",
                logs=base / "logs",
                cache=base / "cache",
            )
        import platformdirs

        dirs = platformdirs.PlatformDirs(APP_NAME, appauthor=False)
        data = Path(dirs.user_data_dir)
        return cls(
            data=data,
            models=data / "models",
            config=Path(dirs.user_config_dir),
            logs=Path(dirs.user_log_dir),
            cache=Path(dirs.user_cache_dir),
        )

    @property
    def settings_file(self) -> Path:
        return self.config / "settings.json"

    @property
    def registry_file(self) -> Path:
        return self.data / "models.json"

    @property
    def log_file(self) -> Path:
        return self.logs / "bastion.log"

    def ensure(self) -> None:
        """Create the folders, readable by the user only (chat data lives here)."""
        for field in fields(self):
            folder: Path = getattr(self, field.name)
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
