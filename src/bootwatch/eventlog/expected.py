"""Readers for files of expected PCR values, in every format found beside the corpus.

Formats (see ``shared/reference/eventlog-corpus.md``):

* ``expected_json``: ``{"pcrs": {"sha1"|"sha256"|...: {"<pcr>": "<hex>"}}, ...}``;
* ``go_attestation_dump``: go-attestation "Dump" JSON, ``Log.PCRs`` = list of
  ``{Index, Digest (base64), DigestAlg}`` where DigestAlg is Go's ``crypto.Hash``
  (3 = SHA-1, 5 = SHA-256, 6 = SHA-384, 7 = SHA-512), not a TPM_ALG_ID;
* ``tpm2_tools_yaml``: ``tpm2_eventlog`` output ending in ``pcrs: {sha1: {0: 0x..}}``;
  PyYAML reads the values as integers, so they are re-padded to the digest width;
* ``evepcr_yaml``: ``pcrs: {sha256: {<n>: 0x<HEX>}}`` read from swtpm;
* ``hirs_txt``: HIRS ``*ExpectedPcrs.txt``, one hex value per line for PCR0-23.

Pure: bytes in, :class:`ExpectedPcrs` out; errors are
:class:`~bootwatch.errors.ExpectedValuesError` naming the file and line.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from bootwatch.errors import ExpectedValuesError
from bootwatch.eventlog.model import KNOWN_DIGEST_SIZES, HashAlg, alg_from_name

__all__ = ["MAX_EXPECTED_SIZE", "ExpectedPcrs", "parse_expected"]

#: Largest expected-values file accepted (tpm2-tools YAML with events is ~100 KB).
MAX_EXPECTED_SIZE = 8 * 1024 * 1024

#: Go ``crypto.Hash`` numbers used by go-attestation dumps -> TPM_ALG_ID.
GO_CRYPTO_HASH: Mapping[int, int] = {
    3: HashAlg.SHA1,
    5: HashAlg.SHA256,
    6: HashAlg.SHA384,
    7: HashAlg.SHA512,
}

_HEX_LINE = re.compile(r"^(?:0x)?([0-9a-fA-F]+)\Z")


@dataclass(frozen=True, slots=True)
class ExpectedPcrs:
    """Expected PCR values: alg_id -> pcr -> value, and the format they were read from."""

    format: str
    values: Mapping[int, Mapping[int, bytes]]
    source: str = ""


def parse_expected(data: bytes, *, name: str = "<expected>") -> ExpectedPcrs:
    """Auto-detect the format of ``data`` and read its PCR values."""
    if len(data) > MAX_EXPECTED_SIZE:
        raise ExpectedValuesError(
            f"{name}: {len(data)} bytes is over the limit of {MAX_EXPECTED_SIZE} bytes"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ExpectedValuesError(
            f"{name}: not UTF-8 text (byte offset {exc.start}); expected PCR values are text"
        ) from None
    stripped = text.lstrip()
    if not stripped:
        raise ExpectedValuesError(f"{name}: empty file")
    if stripped.startswith("{"):
        return _parse_json(text, name)
    first = stripped.splitlines()[0].strip()
    if _HEX_LINE.match(first) and len(first) >= 40:
        return _parse_hirs(text, name)
    return _parse_yaml(text, name)


def _hex(value: str, where: str) -> bytes:
    try:
        return bytes.fromhex(value.strip().removeprefix("0x").removeprefix("0X"))
    except ValueError:
        raise ExpectedValuesError(f"{where}: {value!r} is not a hex digest") from None


def _alg(name_: str, where: str) -> int:
    try:
        return alg_from_name(name_)
    except ValueError:
        raise ExpectedValuesError(f"{where}: unknown digest algorithm {name_!r}") from None


def _pcr(key: object, where: str) -> int:
    try:
        pcr = int(str(key), 10)
    except ValueError:
        raise ExpectedValuesError(f"{where}: PCR index {key!r} is not a number") from None
    if not 0 <= pcr < 64:
        raise ExpectedValuesError(f"{where}: PCR index {pcr} out of range")
    return pcr


def _check_size(alg_id: int, value: bytes, where: str) -> bytes:
    size = KNOWN_DIGEST_SIZES.get(alg_id)
    if size is not None and len(value) != size:
        raise ExpectedValuesError(f"{where}: {len(value)}-byte value for a {size}-byte digest")
    return value


def _parse_json(text: str, name: str) -> ExpectedPcrs:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExpectedValuesError(
            f"{name}: line {exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}"
        ) from None
    if not isinstance(doc, dict):
        raise ExpectedValuesError(f"{name}: a JSON object was expected")
    log = doc.get("Log")
    if isinstance(log, dict) and "PCRs" in log:
        return _parse_go_dump(log["PCRs"], name)
    pcrs = doc.get("pcrs")
    if not isinstance(pcrs, dict):
        raise ExpectedValuesError(
            f"{name}: neither a 'pcrs' object (*.expected.json) nor 'Log.PCRs' "
            "(go-attestation dump)"
        )
    values: dict[int, dict[int, bytes]] = {}
    for bank, entries in pcrs.items():
        where = f"{name}: pcrs.{bank}"
        alg_id = _alg(str(bank), where)
        if not isinstance(entries, dict):
            raise ExpectedValuesError(f"{where}: an object of PCR values was expected")
        out = values.setdefault(alg_id, {})
        for key, hexval in entries.items():
            if not isinstance(hexval, str):
                raise ExpectedValuesError(f"{where}.{key}: a hex string was expected")
            out[_pcr(key, f"{where}.{key}")] = _check_size(
                alg_id, _hex(hexval, f"{where}.{key}"), f"{where}.{key}"
            )
    return ExpectedPcrs("expected_json", values, name)


def _parse_go_dump(entries: Any, name: str) -> ExpectedPcrs:
    if not isinstance(entries, list):
        raise ExpectedValuesError(f"{name}: Log.PCRs: a list was expected")
    values: dict[int, dict[int, bytes]] = {}
    for i, entry in enumerate(entries):
        where = f"{name}: Log.PCRs[{i}]"
        if not isinstance(entry, dict):
            raise ExpectedValuesError(f"{where}: an object was expected")
        go_alg = entry.get("DigestAlg")
        alg_id = GO_CRYPTO_HASH.get(go_alg) if isinstance(go_alg, int) else None
        if alg_id is None:
            raise ExpectedValuesError(
                f"{where}.DigestAlg: {go_alg!r} is not a Go crypto.Hash number bootwatch "
                "knows (3=SHA-1, 5=SHA-256, 6=SHA-384, 7=SHA-512)"
            )
        index = entry.get("Index")
        if not isinstance(index, int):
            raise ExpectedValuesError(f"{where}.Index: an integer was expected")
        digest = entry.get("Digest")
        if not isinstance(digest, str):
            raise ExpectedValuesError(f"{where}.Digest: a base64 string was expected")
        try:
            raw = base64.b64decode(digest, validate=True)
        except binascii.Error:
            raise ExpectedValuesError(f"{where}.Digest: invalid base64") from None
        values.setdefault(alg_id, {})[_pcr(index, where)] = _check_size(alg_id, raw, where)
    return ExpectedPcrs("go_attestation_dump", values, name)


def _parse_hirs(text: str, name: str) -> ExpectedPcrs:
    values: dict[int, dict[int, bytes]] = {}
    # HIRS writes SHA-1 or SHA-256 values; SM3-256 shares SHA-256's width and is not used.
    by_width = {40: int(HashAlg.SHA1), 64: int(HashAlg.SHA256), 96: int(HashAlg.SHA384)}
    pcr = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        m = _HEX_LINE.match(line)
        if m is None:
            raise ExpectedValuesError(f"{name}: line {lineno}: not a hex PCR value: {line[:40]!r}")
        hexval = m.group(1)
        alg_id = by_width.get(len(hexval))
        if alg_id is None:
            raise ExpectedValuesError(
                f"{name}: line {lineno}: {len(hexval)} hex digits is no known digest width"
            )
        if pcr >= 24:
            raise ExpectedValuesError(f"{name}: line {lineno}: more than 24 PCR values")
        values.setdefault(alg_id, {})[pcr] = bytes.fromhex(hexval)
        pcr += 1
    return ExpectedPcrs("hirs_txt", values, name)


def _parse_yaml(text: str, name: str) -> ExpectedPcrs:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        doc = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}:{mark.column + 1}: " if mark is not None else ""
        raise ExpectedValuesError(f"{name}: {where}invalid YAML") from None
    if isinstance(doc, dict) and "pcrs" in doc and doc["pcrs"] is None:
        # tpm2-tools specid-vendordata.bin.yaml: a log that extends nothing has "pcrs:" empty
        return ExpectedPcrs("tpm2_tools_yaml", {}, name)
    if not isinstance(doc, dict) or not isinstance(doc.get("pcrs"), dict):
        raise ExpectedValuesError(
            f"{name}: no 'pcrs:' map (tpm2-tools YAML, evepcr *.pcr.yml, HIRS text, "
            "*.expected.json or go-attestation dump JSON were expected)"
        )
    fmt = "tpm2_tools_yaml" if "events" in doc or "version" in doc else "evepcr_yaml"
    values: dict[int, dict[int, bytes]] = {}
    for bank, entries in doc["pcrs"].items():
        where = f"{name}: pcrs.{bank}"
        alg_id = _alg(str(bank), where)
        size = KNOWN_DIGEST_SIZES.get(alg_id)
        if size is None or not isinstance(entries, dict):
            raise ExpectedValuesError(f"{where}: a map of PCR values of a known bank expected")
        out = values.setdefault(alg_id, {})
        for key, val in entries.items():
            w = f"{where}.{key}"
            if isinstance(val, bool) or not isinstance(val, int | str):
                raise ExpectedValuesError(f"{w}: a hex value was expected")
            if isinstance(val, int):
                # PyYAML reads 0x... as an integer: re-pad it to the digest width.
                if val < 0 or val.bit_length() > 8 * size:
                    raise ExpectedValuesError(f"{w}: value does not fit a {size}-byte digest")
                raw = val.to_bytes(size, "big")
            else:
                raw = _check_size(alg_id, _hex(val, w), w)
            out[_pcr(key, w)] = raw
    return ExpectedPcrs(fmt, values, name)
