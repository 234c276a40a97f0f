"""Keyed seals: an HMAC-SHA256 over every record a command writes, under a secret key kept outside the run folders.

A folder's seals live in one file, ``seals.json``: the key's id (a short hash of the key, never the key), a
random id of the folder's set of records (so a record moved into another folder does not verify there), and
per file name its HMAC. The key is made on first use, atomically, with mode 0600, at ``$PRIVMED_SEAL_KEY``
(a team's shared key), else ``$XDG_CONFIG_HOME/privmed/seal.key``, else ``~/.config/privmed/seal.key``.

A reader holding the key refuses a record whose seal fails (:data:`~privmed.errors.SEAL_BROKEN`); a record
sealed under another key, or not sealed (e.g. written before keyed seals existed), is read and called
*unverified*. What this does and does not protect against: ``docs/privacy.md``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from privmed import atomic
from privmed.errors import SEAL_BROKEN, SEAL_KEY_UNREADABLE, SEALS_UNREADABLE, PrivmedError

SEALS = "seals.json"
KEY_ENV = "PRIVMED_SEAL_KEY"
KEY_BYTES = 32


def key_path() -> Path:
    """Where the seal key is: ``$PRIVMED_SEAL_KEY``, else under ``$XDG_CONFIG_HOME`` (or ``~/.config``)."""
    if os.environ.get(KEY_ENV):
        return Path(os.environ[KEY_ENV]).expanduser()
    config_home = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config_home) / "privmed" / "seal.key"


def load_key() -> bytes:
    """The seal key, made on first use (random, mode 0600, created atomically: two processes starting at once
    end up with the same key)."""
    path = key_path()
    if not path.exists():
        _create_key(path)
    try:
        key = path.read_bytes().strip()
    except OSError as err:
        raise PrivmedError(SEAL_KEY_UNREADABLE.format(path=path, reason=err.strerror, env=KEY_ENV)) from None
    if len(key) < KEY_BYTES:
        raise PrivmedError(SEAL_KEY_UNREADABLE.format(path=path, reason=f"it holds {len(key)} bytes, fewer than "
                                                      f"{KEY_BYTES}", env=KEY_ENV))
    return key


def _create_key(path: Path) -> None:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".seal.key.")  # mode 0600
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(KEY_BYTES) + "\n")
        try:
            os.link(tmp, path)  # fails if another process made the key first: theirs is kept
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    except OSError as err:
        raise PrivmedError(SEAL_KEY_UNREADABLE.format(path=path, reason=f"it cannot be created ({err.strerror})",
                                                      env=KEY_ENV)) from None


def key_id(key: bytes) -> str:
    """A short public name of the key (a hash of it; the key cannot be recovered from it)."""
    return hashlib.sha256(b"privmed seal key id\0" + key).hexdigest()[:16]


def file_digest(path: Path) -> str:
    """The plain SHA-256 of a file (what a ledger names its upstream records by)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _mac(key: bytes, set_id: str, name: str, path: Path) -> str:
    mac = hmac.new(key, f"privmed seal\0{set_id}\0{name}\0".encode(), hashlib.sha256)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            mac.update(block)
    return mac.hexdigest()


def seal(folder: Path, names: Iterable[str]) -> None:
    """Seal the files ``names`` of ``folder`` under this machine's key, beside the seals already there (a folder
    sealed under another key is sealed afresh: the other key's seals are dropped)."""
    folder, key = Path(folder), load_key()
    current = read_seals(folder)
    if current is not None and current["key_id"] == key_id(key):
        set_id, macs = current["set"], dict(current["hmac_sha256"])
    else:
        set_id, macs = secrets.token_hex(16), {}
    for name in names:
        macs[name] = _mac(key, set_id, name, folder / name)
    _atomic_write(folder / SEALS, json.dumps({"key_id": key_id(key), "set": set_id, "hmac_sha256": macs},
                                             indent=2) + "\n")


def read_seals(folder: Path) -> dict | None:
    """``folder/seals.json`` (None when there is none); refuses one that is not a seals file."""
    path = Path(folder) / SEALS
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PrivmedError(SEALS_UNREADABLE.format(path=path, reason=str(err).splitlines()[0])) from None
    if (not isinstance(raw, dict) or not isinstance(raw.get("key_id"), str) or not isinstance(raw.get("set"), str)
            or not isinstance(raw.get("hmac_sha256"), dict)
            or not all(isinstance(v, str) for v in raw["hmac_sha256"].values())):
        raise PrivmedError(SEALS_UNREADABLE.format(path=path, reason="it is not a privmed seals file"))
    return raw


@dataclass(frozen=True)
class Verdict:
    """How a folder's records were verified: ``verified``, or why not, in words."""

    verified: bool
    why: str = ""

    def words(self) -> str:
        return "seal verified" if self.verified else f"unverified: {self.why}"

    def __and__(self, other: "Verdict") -> "Verdict":
        if not self.verified:
            return self
        return other


VERIFIED = Verdict(True)
NO_SEAL = "no keyed seal (written before keyed seals existed, or not sealed)"


def verify(folder: Path, names: Iterable[str]) -> Verdict:
    """Check the seals of the files ``names`` of ``folder`` (a name neither present nor sealed is skipped).
    Refuses, with :data:`~privmed.errors.SEAL_BROKEN`, a file sealed under this key whose seal fails (edited,
    replaced, from another folder, or missing); a folder sealed under another key, or without seals, and a
    file not sealed are *unverified*."""
    folder = Path(folder)
    current = read_seals(folder)
    if current is None:
        return Verdict(False, NO_SEAL)
    key = load_key()
    if current["key_id"] != key_id(key):
        return Verdict(False, f"sealed under another key (id {current['key_id']}, not this machine's "
                              f"{key_id(key)}; {KEY_ENV} names a shared key)")
    macs, unsealed = current["hmac_sha256"], []
    for name in names:
        path = folder / name
        if name not in macs:
            if path.exists():
                unsealed.append(name)
            continue
        if not path.is_file() or not hmac.compare_digest(macs[name], _mac(key, current["set"], name, path)):
            raise PrivmedError(SEAL_BROKEN.format(path=path, seals=folder / SEALS))
    return Verdict(False, f"{', '.join(unsealed)} not sealed") if unsealed else VERIFIED


def _atomic_write(path: Path, text: str) -> None:
    atomic.write_text(path, text)
