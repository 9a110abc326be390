"""The monitor's release store: signed manifests, wheels and rollout states on disk.

Layout under the monitor's data directory (``DATA/releases``)::

    VERSION/manifest.json     the signed-release body exactly as published
    VERSION/WHEEL             the wheel (bootwatch-VERSION-py3-none-any.whl)
    VERSION/rollout.json      the persisted rollout state (planner.RolloutState)

Every file is written atomically (temporary file in the same directory, fsync,
rename, fsync of the directory), and the manifest last: a release exists only
once its manifest does, so a crash mid-publish leaves no half release.  A
publish is verified before anything is written (the signature under the
monitor's trusted release keys, the wheel's size and SHA-256), idempotent for
identical bytes and refused for a different release under the same version.

The store is one object owned by the app (no module state); a lock serialises
publish and rollout-state updates from the server's worker threads.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from packaging.version import Version

from bootwatch.errors import ProtocolError, StorageError
from bootwatch.monitor.releases.planner import (
    RolloutState,
    decode_rollout_state,
    encode_rollout_state,
)
from bootwatch.protocol.release import (
    PublicReleaseKey,
    RefusalReason,
    ReleaseManifest,
    ReleaseRefusedError,
    decode_signed_release,
    parse_version,
    verify_release,
)

__all__ = ["MAX_WHEEL_BYTES", "ReleaseConflictError", "ReleaseStore", "StoredRelease"]

#: largest wheel the monitor accepts (a bootwatch wheel is ~300 KB)
MAX_WHEEL_BYTES = 64 * 1024 * 1024


class ReleaseConflictError(StorageError):
    """A different release was already published under this version (never overwritten)."""

    code = "release_conflict"


@dataclass(frozen=True)
class StoredRelease:
    """A published release: its verified manifest, its signed body and its wheel's path."""

    manifest: ReleaseManifest
    signed_body: bytes
    wheel_path: Path


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class ReleaseStore:
    """Published agent releases under ``root`` (usually ``DATA_DIR/releases``)."""

    def __init__(self, root: Path, trusted_keys: tuple[PublicReleaseKey, ...]) -> None:
        if not trusted_keys:
            raise StorageError(
                "release store: no trusted release key configured; releases cannot be verified"
            )
        self.root = root
        self.trusted_keys = trusted_keys
        self.lock = threading.RLock()
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"release store {root}: cannot create: {exc.strerror}") from None

    def _dir(self, version: str) -> Path:
        # the version is normalised by parse_version: digits, letters, dots, '!' only
        return self.root / str(parse_version(version, "version"))

    # --- publishing -------------------------------------------------------------

    def publish(self, signed_body: bytes, wheel: bytes) -> tuple[StoredRelease, bool]:
        """Verify and store a release; (release, created).  Nothing is written on refusal."""
        manifest = verify_release(decode_signed_release(signed_body), self.trusted_keys)
        if len(wheel) != manifest.size:
            raise ReleaseRefusedError(
                f"the wheel is {len(wheel)} bytes, the manifest says {manifest.size}",
                reason=RefusalReason.SIZE_MISMATCH,
            )
        digest = hashlib.sha256(wheel).hexdigest()
        if not hmac.compare_digest(digest, manifest.sha256):
            raise ReleaseRefusedError(
                f"the wheel's SHA-256 is {digest}, the manifest says {manifest.sha256}",
                reason=RefusalReason.HASH_MISMATCH,
            )
        with self.lock:
            existing = self.get(manifest.version)
            if existing is not None:
                if existing.manifest == manifest:
                    return existing, False
                raise ReleaseConflictError(
                    f"release {manifest.version} is already published with a different "
                    "manifest; publish a new version instead"
                )
            directory = self._dir(manifest.version)
            try:
                directory.mkdir(exist_ok=True)
                _atomic_write(directory / manifest.wheel, wheel)
                _atomic_write(directory / "manifest.json", signed_body)
            except OSError as exc:
                raise StorageError(f"release store {directory}: {exc}") from None
        return StoredRelease(manifest, signed_body, directory / manifest.wheel), True

    # --- reading ----------------------------------------------------------------

    def get(self, version: str) -> StoredRelease | None:
        """The release published as ``version`` (re-verified from disk), or None."""
        try:
            directory = self._dir(version)
        except ProtocolError:
            return None
        manifest_path = directory / "manifest.json"
        try:
            body = manifest_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"{manifest_path}: {exc.strerror}") from None
        try:
            manifest = verify_release(decode_signed_release(body), self.trusted_keys)
        except (ProtocolError, ReleaseRefusedError) as exc:
            raise StorageError(
                f"{manifest_path}: stored manifest no longer verifies: {exc}"
            ) from None
        return StoredRelease(manifest, body, directory / manifest.wheel)

    def releases(self) -> list[StoredRelease]:
        """Every published release, newest version first."""
        out = []
        for entry in self.root.iterdir():
            if entry.is_dir() and not entry.name.startswith("."):
                release = self.get(entry.name)
                if release is not None:
                    out.append(release)
        out.sort(key=lambda r: Version(r.manifest.version), reverse=True)
        return out

    def latest(self) -> StoredRelease | None:
        """The newest published release (the one being rolled out), or None."""
        releases = self.releases()
        return releases[0] if releases else None

    # --- rollout state ----------------------------------------------------------

    def rollout_state(self, version: str) -> RolloutState | None:
        path = self._dir(version) / "rollout.json"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"{path}: {exc.strerror}") from None
        state = decode_rollout_state(data, str(path))
        if state.version != version:
            raise StorageError(f"{path}: holds the rollout of {state.version}, not {version}")
        return state

    def save_rollout_state(self, state: RolloutState) -> None:
        path = self._dir(state.version) / "rollout.json"
        try:
            _atomic_write(path, encode_rollout_state(state))
        except OSError as exc:
            raise StorageError(f"{path}: {exc}") from None
