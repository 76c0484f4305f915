"""Personal data encrypted at rest: a key ring of Fernet keys (AES-128-CBC + HMAC-SHA256).

The first key encrypts; every key decrypts, so a rotation adds a new key in front,
re-encrypts the stored values (`zhizhi keys rotate`), then retires the old keys.
Keys come from `ZHIZHI_DATA_KEYS` (comma-separated) or from the key file
(`ZHIZHI_DATA_KEY_FILE`, default `<data_dir>/keys/data.keys`, one key a line,
created with mode 0600 on first use). Ciphertext carries the prefix `enc1:` so
that rows stored before encryption existed still read back (as plain text) and
get encrypted by the next rotation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

PREFIX = "enc1:"
#: Values that mark a key that was never chosen by anyone; refused.
PLACEHOLDER_KEYS = {"", "changeme", "change-me", "secret", "test", "xxx"}


class DataKeyError(Exception):
    """The key ring is missing, malformed, or cannot decrypt a stored value."""


class Cipher:
    """Encrypts and decrypts short text fields; `None` stays `None`."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise DataKeyError("no data encryption key")
        bad = [k for k in keys if k.strip().lower() in PLACEHOLDER_KEYS]
        if bad:
            raise DataKeyError("placeholder data key refused; generate one with `zhizhi keys generate`")
        try:
            self._fernets = [Fernet(k.strip().encode()) for k in keys]
        except (ValueError, TypeError) as exc:
            raise DataKeyError(f"malformed data key: {exc}") from None
        self._multi = MultiFernet(self._fernets)
        self.key_count = len(keys)

    def encrypt(self, value: str | None) -> str | None:
        if value is None:
            return None
        return PREFIX + self._fernets[0].encrypt(value.encode("utf-8")).decode("ascii")

    def decrypt(self, value: str | None) -> str | None:
        if value is None or not value.startswith(PREFIX):
            return value  # stored before encryption: plain text
        try:
            return self._multi.decrypt(value[len(PREFIX):].encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise DataKeyError("stored value cannot be decrypted with the configured keys") from None

    def rotate(self, value: str | None) -> str | None:
        """Re-encrypt under the primary key (plain text gets encrypted)."""
        if value is None:
            return None
        return self.encrypt(self.decrypt(value))

    def is_current(self, value: str | None) -> bool:
        """Encrypted under the primary key already?"""
        if value is None:
            return True
        if not value.startswith(PREFIX):
            return False
        try:
            self._fernets[0].decrypt(value[len(PREFIX):].encode("ascii"))
            return True
        except InvalidToken:
            return False


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


def key_file_path(data_dir: Path, configured: Path | None = None) -> Path:
    return configured or (data_dir / "keys" / "data.keys")


def read_key_file(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="ascii").splitlines()
            if line.strip() and not line.startswith("#")]


def write_key_file(path: Path, keys: Sequence[str]) -> None:
    """Write atomically with mode 0600: the keys never sit in a world-readable file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write("# zhizhi data keys: the first encrypts, all decrypt. Keep secret; back up.\n")
        f.write("\n".join(keys) + "\n")
    os.replace(tmp, path)


def load_cipher(data_dir: Path, env_keys: str = "", key_file: Path | None = None, create: bool = True) -> Cipher:
    """The key ring from the environment, else the key file (created with a fresh key when absent)."""
    if env_keys.strip():
        return Cipher([k for k in env_keys.split(",") if k.strip()])
    path = key_file_path(data_dir, key_file)
    if not path.exists():
        if not create:
            raise DataKeyError(f"no key file at {path}")
        write_key_file(path, [generate_key()])
    return Cipher(read_key_file(path))
