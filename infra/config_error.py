"""The error a refused stack setting raises."""

from __future__ import annotations


class ConfigError(ValueError):
    """A stack setting Google Cloud or the service would refuse: `setting` is its key
    (`modelrun:cpu`), the message says what is wrong with it."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting
