"""The ``/attest/AzureGuest`` request (protocol 2.0): model, decoder, encoder.

Wire shape (maa-protocol.md section 1.3): the body is
``{"AttestationInfo": base64url(JSON)}``; the inner JSON carries the OS
fields (base64 strings), the TCG log, the client payload, ``TpmInfo`` (the
AIK, a quote, the ephemeral key and its certification, the PCR values) and
``IsolationInfo``.

The agent builds an :class:`AzureGuestRequest` and :func:`encode_request`s
it exactly as Microsoft's C++ client does (JsonCpp styled output: sorted
capitalised keys, tab indentation, ``" : "``, standard padded base64), so a
real request round-trips byte for byte.  The service :func:`decode_request`s
a body into an :class:`UnverifiedAzureGuestRequest`: nothing in it is
trusted until :func:`bootwatch.attest.evidence.verify_evidence` says so.

Decoding is tolerant exactly where real clients differ, and each leniency is
named: key case (the spec example uses ``attestationInfo``), standard or
URL-safe base64 with optional padding, OS version numbers sent as strings
(the Python ``cvm-attestation-tools`` client), ``OSBuild`` sent as the
literal ``NotApplication`` (Linux clients), ClientPayload values given as raw
JSON instead of base64.  Everything has a size limit; every error is a
:class:`~bootwatch.errors.ProtocolError` naming the JSON path.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pybase64

from bootwatch.encoding import b64url_encode
from bootwatch.errors import ProtocolError
from bootwatch.protocol.jsonread import MAX_JSON_DEPTH, JsonDepthError, check_json_depth

__all__ = [
    "ISOLATION_TRUSTED_LAUNCH",
    "MAX_AIK_CERT_BYTES",
    "MAX_ATTEST_BYTES",
    "MAX_BODY_BYTES",
    "MAX_CLIENT_PAYLOAD_ENTRIES",
    "MAX_CLIENT_PAYLOAD_KEY",
    "MAX_CLIENT_PAYLOAD_VALUE",
    "MAX_DIGEST_BYTES",
    "MAX_OS_FIELD_BYTES",
    "MAX_PCRS",
    "MAX_PUBLIC_BYTES",
    "MAX_SIGNATURE_BYTES",
    "MAX_TCG_LOG_BYTES",
    "OSBUILD_LINUX_LITERAL",
    "PROTOCOL_VERSION",
    "WORKAROUND_OSBUILD_LITERAL",
    "WORKAROUND_PAYLOAD_RAW_JSON",
    "WORKAROUND_VERSION_STRINGS",
    "AzureGuestRequest",
    "TpmInfo",
    "UnverifiedAzureGuestRequest",
    "attestation_info_json",
    "decode_attestation_info",
    "decode_request",
    "encode_request",
]

PROTOCOL_VERSION = "2.0"
ISOLATION_TRUSTED_LAUNCH = "TrustedLaunch"

#: Limits (decoded bytes unless said otherwise).
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_TCG_LOG_BYTES = 2 * 1024 * 1024
MAX_AIK_CERT_BYTES = 16 * 1024
MAX_PUBLIC_BYTES = 2048  # AikPub may be a whole ReadPublic response
MAX_ATTEST_BYTES = 2048
MAX_SIGNATURE_BYTES = 1024
MAX_OS_FIELD_BYTES = 256
MAX_CLIENT_PAYLOAD_ENTRIES = 64
MAX_CLIENT_PAYLOAD_KEY = 256
MAX_CLIENT_PAYLOAD_VALUE = 16 * 1024
MAX_PCRS = 24
MAX_DIGEST_BYTES = 64

#: Named leniencies (house rule 3): which client needs each.
WORKAROUND_OSBUILD_LITERAL = "osbuild-literal"  # Linux clients send the literal "NotApplication"
WORKAROUND_VERSION_STRINGS = "os-version-strings"  # cvm-attestation-tools sends "10" not 10
WORKAROUND_PAYLOAD_RAW_JSON = "client-payload-raw-json"  # values not base64-encoded
OSBUILD_LINUX_LITERAL = "NotApplication"


@dataclass(frozen=True)
class TpmInfo:
    """``TpmInfo``: the TPM evidence, as raw bytes (parsed and checked by bootwatch.tpm)."""

    aik_cert: bytes | None
    aik_pub: bytes
    pcr_quote: bytes
    pcr_signature: bytes
    enc_key_pub: bytes
    enc_key_certify_info: bytes
    enc_key_certify_info_signature: bytes
    pcr_set: tuple[int, ...]
    pcrs: tuple[tuple[int, bytes], ...]  # (index, SHA-256 digest), as sent


@dataclass(frozen=True)
class _AzureGuestFields:
    protocol_version: str
    os_type: str
    os_distro: str
    os_version_major: int
    os_version_minor: int
    os_build: str
    tcg_logs: bytes
    client_payload: Mapping[str, str]
    tpm_info: TpmInfo
    isolation_type: str


@dataclass(frozen=True)
class AzureGuestRequest(_AzureGuestFields):
    """A request the agent builds from its own TPM (values decoded: strings, not base64)."""


@dataclass(frozen=True)
class UnverifiedAzureGuestRequest(_AzureGuestFields):
    """A request as received: well formed, but none of its claims verified yet.

    ``workarounds`` names the leniencies decoding needed; ``unknown_fields``
    lists keys bootwatch does not use (kept for diagnostics, never trusted).
    """

    workarounds: tuple[str, ...] = ()
    unknown_fields: tuple[str, ...] = ()
    isolation_evidence_json: str | None = field(default=None)


# --- decoding ---------------------------------------------------------------

_B64_RE = re.compile(r"[A-Za-z0-9+/\-_]*={0,2}")


def _b64_fast(value: str) -> bytes | None:
    """Decode ``value`` in one SIMD pass when it is well-formed base64, else None.

    ``pybase64.b64decode(validate=True)`` rejects every character outside the
    standard alphabet, padding anywhere but the end and a bad length, so a
    success here is a value :func:`_b64_checked` accepts too, with the same
    bytes (URL-safe characters are mapped and missing padding added first;
    more than two trailing ``=`` is left to the slow path, which rejects it).
    On any doubt the caller falls back to the slow path, which alone produces
    error messages: this is a shortcut, never a second rule.
    """
    if value.endswith("==="):
        return None
    if "-" in value or "_" in value:
        value = value.replace("-", "+").replace("_", "/")
    rem = len(value) % 4
    if rem:
        value += "=" * (4 - rem)
    try:
        return pybase64.b64decode(value, validate=True)
    except (binascii.Error, ValueError, TypeError):
        return None


def _b64_checked(value: str, path: str) -> bytes:
    """The reference decoder: alphabet check by regex, then padding fix-up and decode."""
    if not _B64_RE.fullmatch(value):
        raise ProtocolError("not base64 (characters outside the alphabet)", field=path)
    body = value.rstrip("=")
    if len(body) % 4 == 1:
        raise ProtocolError("not base64 (bad length)", field=path)
    body = body.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("not base64", field=path) from None


def _b64(value: Any, path: str, limit: int, *, allow_empty: bool = False) -> bytes:
    """Decode standard or URL-safe base64, padding optional, within ``limit`` bytes."""
    if not isinstance(value, str):
        raise ProtocolError(f"expected a base64 string, got {type(value).__name__}", field=path)
    if len(value) > (limit * 4) // 3 + 4:
        raise ProtocolError(f"over the limit of {limit} bytes", field=path)
    out = _b64_fast(value)
    if out is None:
        out = _b64_checked(value, path)
    if not out and not allow_empty:
        raise ProtocolError("empty", field=path)
    if len(out) > limit:
        raise ProtocolError(f"{len(out)} bytes is over the limit of {limit}", field=path)
    return out


def _b64_text(value: Any, path: str) -> str:
    raw = _b64(value, path, MAX_OS_FIELD_BYTES, allow_empty=True)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("base64 content is not UTF-8 text", field=path) from None


#: a UTF-16 surrogate: JSON's ``\ud800`` escape yields one alone, which no UTF-8 text holds
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _check_text(value: str, what: str) -> None:
    """Refuse a string with a lone surrogate (``"\\ud800"`` in the JSON): it is no Unicode
    text, and whatever stores, logs or re-encodes it as UTF-8 would fail later, far from
    here (found by fuzzing: scripts/fuzz azureguest). ``isascii`` is O(1) on the usual
    ASCII strings, so well-formed requests pay nothing for the search."""
    if not value.isascii() and _SURROGATE_RE.search(value):
        raise ProtocolError(f"{what} {value[:40]!r} is not valid Unicode text "
                            "(a lone UTF-16 surrogate)")


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    for k, v in pairs:
        _check_text(k, "key")
        if type(v) is str:
            _check_text(v, f"the value of {k!r}")
    fast = dict(pairs)
    if len(fast) == len(pairs) and len({k.lower() for k in fast}) == len(fast):
        return fast
    # a duplicate somewhere: find the first one, in order, to name it
    out: dict[str, Any] = {}
    seen: set[str] = set()
    for k, v in pairs:
        if k.lower() in seen:
            raise ProtocolError(f"duplicate key {k!r} (keys are case-insensitive)")
        seen.add(k.lower())
        out[k] = v
    return out


def _reject_constant(name: str) -> Any:
    raise ProtocolError(f"JSON constant {name} is not allowed")


def _loads(data: bytes | str, path: str) -> Any:
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"not UTF-8 at byte {exc.start}", field=path) from None
    try:
        return json.loads(text, object_pairs_hook=_pairs_hook, parse_constant=_reject_constant)
    except ProtocolError as exc:
        raise ProtocolError(exc.message, field=path) from None
    except RecursionError:
        raise JsonDepthError(MAX_JSON_DEPTH, field=path) from None
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"invalid JSON at line {exc.lineno}:{exc.colno}: {exc.msg}",
                            field=path) from None


class _Obj:
    """A JSON object read with case-insensitive keys, tracking which were used."""

    def __init__(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            check_json_depth(value, field=path)  # too deep is the better reason
            raise ProtocolError(f"expected an object, got {type(value).__name__}", field=path)
        self.path = path
        self._by_lower = {k.lower(): (k, v) for k, v in value.items()}
        self._used: set[str] = set()

    def sub(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def get(self, name: str, *, required: bool = True) -> Any:
        entry = self._by_lower.get(name.lower())
        if entry is None:
            if required:
                raise ProtocolError("missing", field=self.sub(name))
            return None
        self._used.add(name.lower())
        return entry[1]

    def unknown(self) -> list[str]:
        """Paths of the keys nobody read; their values are only listed, never walked, but
        are held to the depth limit like everything else a client sends (no cost for the
        requests real clients send, which have none)."""
        out = []
        for low, (k, v) in self._by_lower.items():
            if low not in self._used:
                if isinstance(v, dict | list):
                    check_json_depth(v, field=self.sub(k))
                out.append(self.sub(k))
        return out


def _uint(value: Any, path: str, workarounds: list[str]) -> int:
    if isinstance(value, bool):
        raise ProtocolError("expected an integer, got a boolean", field=path)
    if isinstance(value, str):
        if not value.isascii() or not value.isdigit() or len(value) > 10:
            raise ProtocolError(f"expected an integer, got {value[:20]!r}", field=path)
        if WORKAROUND_VERSION_STRINGS not in workarounds:
            workarounds.append(WORKAROUND_VERSION_STRINGS)
        value = int(value)
    if not isinstance(value, int):
        raise ProtocolError(f"expected an integer, got {type(value).__name__}", field=path)
    if not 0 <= value <= 0xFFFFFFFF:
        raise ProtocolError(f"{value} is out of range", field=path)
    return value


def _client_payload(value: Any, path: str, workarounds: list[str]) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"expected an object, got {type(value).__name__}", field=path)
    if len(value) > MAX_CLIENT_PAYLOAD_ENTRIES:
        raise ProtocolError(f"more than {MAX_CLIENT_PAYLOAD_ENTRIES} entries", field=path)
    out: dict[str, str] = {}
    for k, v in value.items():
        p = f"{path}.{k}"
        if len(k) > MAX_CLIENT_PAYLOAD_KEY:
            raise ProtocolError(f"key longer than {MAX_CLIENT_PAYLOAD_KEY}", field=path)
        if isinstance(v, str):
            raw = _b64(v, p, MAX_CLIENT_PAYLOAD_VALUE, allow_empty=True)
            try:
                out[k] = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError("base64 content is not UTF-8 text", field=p) from None
        else:
            # the only places a client's own nesting is walked (re-serialised): bounded
            # here, so the hot path pays nothing for requests without raw JSON values
            check_json_depth(v, field=p)
            text = json.dumps(v, separators=(",", ":"), sort_keys=True)
            if len(text) > MAX_CLIENT_PAYLOAD_VALUE:
                raise ProtocolError(f"over {MAX_CLIENT_PAYLOAD_VALUE} bytes", field=p)
            if WORKAROUND_PAYLOAD_RAW_JSON not in workarounds:
                workarounds.append(WORKAROUND_PAYLOAD_RAW_JSON)
            out[k] = text
    return out


def _tpm_info(value: Any, path: str, unknown: list[str]) -> TpmInfo:
    o = _Obj(value, path)
    cert_v = o.get("AikCert", required=False)
    aik_cert = None if cert_v in (None, "") else _b64(cert_v, o.sub("AikCert"), MAX_AIK_CERT_BYTES)
    pcr_set_v = o.get("PcrSet")
    if not isinstance(pcr_set_v, list) or len(pcr_set_v) > MAX_PCRS:
        raise ProtocolError(f"expected a list of at most {MAX_PCRS} PCR indices",
                            field=o.sub("PcrSet"))
    pcr_set: list[int] = []
    for i, v in enumerate(pcr_set_v):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < MAX_PCRS:
            raise ProtocolError("expected a PCR index 0-23", field=f"{o.sub('PcrSet')}[{i}]")
        if v in pcr_set:
            raise ProtocolError(f"PCR {v} listed twice", field=f"{o.sub('PcrSet')}[{i}]")
        pcr_set.append(v)
    pcrs_v = o.get("PCRs")
    if not isinstance(pcrs_v, list) or len(pcrs_v) > MAX_PCRS:
        raise ProtocolError(f"expected a list of at most {MAX_PCRS} PCRs", field=o.sub("PCRs"))
    pcrs: list[tuple[int, bytes]] = []
    seen: set[int] = set()
    for i, entry in enumerate(pcrs_v):
        if (type(entry) is dict and len(entry) == 2 and type(entry.get("Index")) is int
                and 0 <= entry["Index"] < MAX_PCRS and entry["Index"] not in seen
                and "Digest" in entry):
            # what every client sends: exactly {"Index": n, "Digest": "..."}; the same
            # checks as below, without the case-insensitive reader (no unknown keys)
            idx = entry["Index"]
            digest_path = f"{o.sub('PCRs')}[{i}].Digest"
            pcrs.append((idx, _b64(entry["Digest"], digest_path, MAX_DIGEST_BYTES)))
            seen.add(idx)
            continue
        e = _Obj(entry, f"{o.sub('PCRs')}[{i}]")
        idx = e.get("Index")
        if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < MAX_PCRS:
            raise ProtocolError("expected a PCR index 0-23", field=e.sub("Index"))
        if idx in seen:
            raise ProtocolError(f"PCR {idx} listed twice", field=e.sub("Index"))
        pcrs.append((idx, _b64(e.get("Digest"), e.sub("Digest"), MAX_DIGEST_BYTES)))
        seen.add(idx)
        unknown.extend(e.unknown())
    info = TpmInfo(
        aik_cert=aik_cert,
        aik_pub=_b64(o.get("AikPub"), o.sub("AikPub"), MAX_PUBLIC_BYTES),
        pcr_quote=_b64(o.get("PcrQuote"), o.sub("PcrQuote"), MAX_ATTEST_BYTES),
        pcr_signature=_b64(o.get("PcrSignature"), o.sub("PcrSignature"), MAX_SIGNATURE_BYTES),
        enc_key_pub=_b64(o.get("EncKeyPub"), o.sub("EncKeyPub"), MAX_PUBLIC_BYTES),
        enc_key_certify_info=_b64(o.get("EncKeyCertifyInfo"), o.sub("EncKeyCertifyInfo"),
                                  MAX_ATTEST_BYTES),
        enc_key_certify_info_signature=_b64(o.get("EncKeyCertifyInfoSignature"),
                                            o.sub("EncKeyCertifyInfoSignature"),
                                            MAX_SIGNATURE_BYTES),
        pcr_set=tuple(pcr_set),
        pcrs=tuple(pcrs),
    )
    unknown.extend(o.unknown())
    return info


def decode_attestation_info(inner: Any, path: str = "AttestationInfo"
                            ) -> UnverifiedAzureGuestRequest:
    """Decode the inner AttestationInfo JSON object (already parsed)."""
    o = _Obj(inner, path)
    workarounds: list[str] = []
    unknown: list[str] = []
    version = o.get("AttestationProtocolVersion")
    if not isinstance(version, str) or len(version) > 16:
        raise ProtocolError("expected a version string", field=o.sub("AttestationProtocolVersion"))
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {version!r} is not supported (only "
                            f"{PROTOCOL_VERSION!r})", field=o.sub("AttestationProtocolVersion"))
    build_v = o.get("OSBuild")
    if build_v == OSBUILD_LINUX_LITERAL:
        os_build = OSBUILD_LINUX_LITERAL
        workarounds.append(WORKAROUND_OSBUILD_LITERAL)
    else:
        os_build = _b64_text(build_v, o.sub("OSBuild"))
    iso = _Obj(o.get("IsolationInfo"), o.sub("IsolationInfo"))
    iso_type = iso.get("Type")
    if not isinstance(iso_type, str) or not 0 < len(iso_type) <= 32:
        raise ProtocolError("expected an isolation type string", field=iso.sub("Type"))
    evidence = iso.get("Evidence", required=False)
    if evidence is not None:
        check_json_depth(evidence, field=iso.sub("Evidence"))
    evidence_json = None if evidence is None else json.dumps(evidence, separators=(",", ":"))
    log = _b64(o.get("TcgLogs"), o.sub("TcgLogs"), MAX_TCG_LOG_BYTES)
    req = UnverifiedAzureGuestRequest(
        protocol_version=version,
        os_type=_b64_text(o.get("OSType"), o.sub("OSType")),
        os_distro=_b64_text(o.get("OSDistro"), o.sub("OSDistro")),
        os_version_major=_uint(o.get("OSVersionMajor"), o.sub("OSVersionMajor"), workarounds),
        os_version_minor=_uint(o.get("OSVersionMinor"), o.sub("OSVersionMinor"), workarounds),
        os_build=os_build,
        tcg_logs=log,
        client_payload=_client_payload(o.get("ClientPayload", required=False),
                                       o.sub("ClientPayload"), workarounds),
        tpm_info=_tpm_info(o.get("TpmInfo"), o.sub("TpmInfo"), unknown),
        isolation_type=iso_type,
        workarounds=tuple(workarounds),
        unknown_fields=tuple(o.unknown() + iso.unknown() + unknown),
        isolation_evidence_json=evidence_json,
    )
    return req


_ENVELOPE_HEAD = b'{"attestationinfo":"'
_ENVELOPE_TAIL = b'"}'


def _envelope_fast(body: bytes) -> bytes | None:
    """The inner bytes of a compact ``{"AttestationInfo":"<base64>"}`` body, else None.

    What the agents send (no whitespace, one key; the key's case is free as in
    the general path).  A value that decodes as strict base64 holds no quote,
    backslash or control character, so the body is exactly that one-key JSON
    object and ``json.loads`` would return the same string: skipping it saves a
    scan of the whole body.  Anything else (whitespace, escapes, other keys,
    bad base64) returns None and takes the general path, which alone reports errors.
    """
    head = len(_ENVELOPE_HEAD)
    if (len(body) < head + len(_ENVELOPE_TAIL) or not body.endswith(_ENVELOPE_TAIL)
            or body[:head].lower() != _ENVELOPE_HEAD):
        return None
    try:
        text = body[head:-len(_ENVELOPE_TAIL)].decode("ascii")
    except UnicodeDecodeError:
        return None
    if len(text) > (MAX_BODY_BYTES * 4) // 3 + 4:
        return None
    inner = _b64_fast(text)
    if not inner:
        return None
    return inner


def decode_request(body: bytes) -> UnverifiedAzureGuestRequest:
    """Decode an ``/attest/AzureGuest`` body: the outer envelope or the inner JSON itself."""
    if len(body) > MAX_BODY_BYTES:
        raise ProtocolError(f"request body of {len(body)} bytes is over the limit of "
                            f"{MAX_BODY_BYTES}")
    inner_fast = _envelope_fast(body)
    if inner_fast is not None:
        return decode_attestation_info(_loads(inner_fast, "AttestationInfo"))
    outer = _loads(body, "(body)")
    if not isinstance(outer, dict):
        check_json_depth(outer, field="(body)")
        raise ProtocolError("expected a JSON object", field="(body)")
    keys = {k.lower(): k for k in outer}
    if "attestationinfo" in keys and "attestationprotocolversion" not in keys:
        if len(outer) != 1:
            check_json_depth(outer, field="(body)")
            extra = sorted(k for k in outer if k.lower() != "attestationinfo")
            raise ProtocolError(f"unexpected keys {extra} beside AttestationInfo", field="(body)")
        inner_bytes = _b64(outer[keys["attestationinfo"]], "AttestationInfo", MAX_BODY_BYTES)
        return decode_attestation_info(_loads(inner_bytes, "AttestationInfo"))
    return decode_attestation_info(outer, "")


# --- encoding ---------------------------------------------------------------


def _styled(value: Any, indent: int) -> str:
    """JSON in JsonCpp's StyledWriter layout (what the C++ client sends)."""
    tabs = "\t" * indent
    inner = "\t" * (indent + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = []
        for k in sorted(value):
            v = value[k]
            head = f"{inner}{json.dumps(k, ensure_ascii=False)} : "
            if isinstance(v, (dict, list)) and v:
                items.append(f"{head}\n{inner}{_styled(v, indent + 1)}")
            else:
                items.append(head + _styled(v, indent + 1))
        return "{\n" + ",\n".join(items) + f"\n{tabs}}}"
    if isinstance(value, list):
        if not value:
            return "[]"
        items = []
        for v in value:
            items.append(inner + _styled(v, indent + 1))
        return "[\n" + ",\n".join(items) + f"\n{tabs}]"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _b64s(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def attestation_info_json(req: AzureGuestRequest | UnverifiedAzureGuestRequest) -> bytes:
    """The inner AttestationInfo JSON bytes, laid out as Microsoft's C++ client does."""
    ti = req.tpm_info
    tpm: dict[str, Any] = {
        "AikPub": _b64s(ti.aik_pub),
        "EncKeyCertifyInfo": _b64s(ti.enc_key_certify_info),
        "EncKeyCertifyInfoSignature": _b64s(ti.enc_key_certify_info_signature),
        "EncKeyPub": _b64s(ti.enc_key_pub),
        "PCRs": [{"Digest": _b64s(d), "Index": i} for i, d in ti.pcrs],
        "PcrQuote": _b64s(ti.pcr_quote),
        "PcrSet": list(ti.pcr_set),
        "PcrSignature": _b64s(ti.pcr_signature),
    }
    if ti.aik_cert is not None:
        tpm["AikCert"] = _b64s(ti.aik_cert)
    doc: dict[str, Any] = {
        "AttestationProtocolVersion": req.protocol_version,
        "ClientPayload": {k: _b64s(v.encode("utf-8")) for k, v in req.client_payload.items()},
        "IsolationInfo": {"Type": req.isolation_type},
        "OSBuild": _b64s(req.os_build.encode("utf-8")),
        "OSDistro": _b64s(req.os_distro.encode("utf-8")),
        "OSType": _b64s(req.os_type.encode("utf-8")),
        "OSVersionMajor": req.os_version_major,
        "OSVersionMinor": req.os_version_minor,
        "TcgLogs": _b64s(req.tcg_logs),
        "TpmInfo": tpm,
    }
    return _styled(doc, 0).encode("utf-8")


def encode_request(req: AzureGuestRequest | UnverifiedAzureGuestRequest) -> bytes:
    """The request body: ``{"AttestationInfo": base64url(inner JSON)}`` (no padding)."""
    inner = b64url_encode(attestation_info_json(req))
    return json.dumps({"AttestationInfo": inner}, separators=(",", ":")).encode("ascii")
