"""Claims: what policies read (incoming), add, issue into the token, and set as properties.

A claim is immutable; the evaluator never changes one, it only appends new ones.
``read_only`` marks service claims (for example ``pcrs``) that a policy may read but
must not copy into the token; values derived from them stay read-only (maa-protocol.md 2.3).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Union

from bootwatch.errors import InputError

__all__ = [
    "Claim",
    "ClaimIssuer",
    "ClaimValue",
    "ClaimValueType",
    "JsonValue",
    "claim_from_json",
]

#: A JSON value, as carried by 1.2 service claims such as ``events`` or ``pcrs``.
JsonValue = Union[  # noqa: UP007 (recursive alias needs Union with forward refs)
    None, bool, int, float, str, Sequence["JsonValue"], Mapping[str, "JsonValue"]
]

#: What a claim value may hold.
ClaimValue = Union[str, int, bool, JsonValue]  # noqa: UP007


class ClaimValueType(enum.Enum):
    """The ``valueType`` of a claim (String is the default, per the grammar page)."""

    STRING = "String"
    INTEGER = "Integer"
    BOOLEAN = "Boolean"
    #: A structured JSON value (1.2 service claims like ``events``, ``pcrs``).
    JSON = "Json"

    @classmethod
    def of(cls, value: object) -> ClaimValueType:
        """The value type a policy gives a value it creates."""
        if isinstance(value, bool):
            return cls.BOOLEAN
        if isinstance(value, int):
            return cls.INTEGER
        if isinstance(value, str):
            return cls.STRING
        return cls.JSON


class ClaimIssuer(enum.Enum):
    """Who produced a claim."""

    ATTESTATION_SERVICE = "AttestationService"
    ATTESTATION_POLICY = "AttestationPolicy"
    CUSTOM_CLAIM = "CustomClaim"


@dataclass(frozen=True, slots=True)
class Claim:
    """One claim: type, typed value, value type, issuer, and whether it is read-only."""

    type: str
    value: ClaimValue
    value_type: ClaimValueType = ClaimValueType.STRING
    issuer: ClaimIssuer = ClaimIssuer.CUSTOM_CLAIM
    read_only: bool = False

    @classmethod
    def service(cls, type: str, value: ClaimValue, *, read_only: bool = False) -> Claim:
        """A claim produced by the attestation service from verified evidence."""
        return cls(
            type, value, ClaimValueType.of(value), ClaimIssuer.ATTESTATION_SERVICE, read_only
        )

    @classmethod
    def custom(cls, type: str, value: ClaimValue) -> Claim:
        """A claim supplied by the attesting client (its ``RuntimeData``/custom claims)."""
        return cls(type, value, ClaimValueType.of(value), ClaimIssuer.CUSTOM_CLAIM)

    def to_json(self) -> dict[str, object]:
        """The JSON shape the CLI prints (``type``, ``value``, ``valueType``, ``issuer``)."""
        return {
            "type": self.type,
            "value": self.value,
            "valueType": self.value_type.value,
            "issuer": self.issuer.value,
        }


def claim_from_json(item: object, *, where: str = "claim") -> Claim:
    """Read one ``{"type", "value", "valueType"?, "issuer"?, "readOnly"?}`` object.

    ``valueType`` defaults to the JSON type of ``value``; ``issuer`` defaults to
    ``CustomClaim`` as the grammar page says.
    """
    if not isinstance(item, Mapping):
        raise InputError(f"{where}: expected an object with 'type' and 'value'")
    ctype = item.get("type")
    if not isinstance(ctype, str) or not ctype:
        raise InputError(f"{where}.type: expected a non-empty string")
    if "value" not in item:
        raise InputError(f"{where}.value: missing")
    value = item["value"]
    vt_name = item.get("valueType")
    if vt_name is None:
        value_type = ClaimValueType.of(value)
    else:
        try:
            value_type = ClaimValueType(vt_name)
        except ValueError:
            names = ", ".join(v.value for v in ClaimValueType)
            raise InputError(f"{where}.valueType: {vt_name!r} is not one of {names}") from None
        value = _coerce(value, value_type, f"{where}.value")
    issuer_name = item.get("issuer", ClaimIssuer.CUSTOM_CLAIM.value)
    try:
        issuer = ClaimIssuer(issuer_name)
    except ValueError:
        names = ", ".join(i.value for i in ClaimIssuer)
        raise InputError(f"{where}.issuer: {issuer_name!r} is not one of {names}") from None
    read_only = item.get("readOnly", False)
    if not isinstance(read_only, bool):
        raise InputError(f"{where}.readOnly: expected a boolean")
    return Claim(ctype, value, value_type, issuer, read_only)


#: Integer text a claims file may give for an Integer claim: ASCII digits, at most one ``-``
#: (``str.isdigit`` also passes "²" and "--5", on which ``int`` raises a bare ValueError).
_INTEGER_TEXT = re.compile(r"-?[0-9]+")


def _coerce(value: object, value_type: ClaimValueType, where: str) -> ClaimValue:
    if value_type is ClaimValueType.STRING and isinstance(value, str):
        return value
    if value_type is ClaimValueType.BOOLEAN and isinstance(value, bool):
        return value
    if value_type is ClaimValueType.INTEGER:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value.strip()):
            return int(value)
    if value_type is ClaimValueType.JSON:
        return value  # type: ignore[return-value]
    raise InputError(f"{where}: {value!r} is not a valid {value_type.value}")
