"""The OpenAPI document at ``/openapi.json``: every route, the fast path included.

FastAPI describes the routes it serves.  Three things it cannot see are added here,
once, when the document is first asked for (never on a request path):

* ``POST /attest/AzureGuest``: answered by the pure-ASGI fast path in front of
  FastAPI (:class:`~bootwatch.service.attestation.AzureGuestFastPath`), so it is no
  FastAPI route; it is described from :data:`AZUREGUEST_OPERATION` and served exactly
  as before (the fast path is not touched by publishing the document);
* the provider prefix: every MAA route is also served under
  ``/providers/{provider}`` (:class:`~bootwatch.service.providers.ProviderPrefixMiddleware`);
* MAA error answers: every operation documents ``{"error": {"code", "message"}}``
  with ``x-ms-error-code``; FastAPI's ``422`` validation answers do not exist here
  (they are 400 ``InvalidParameter``) and are replaced.
"""

from __future__ import annotations

import copy
from typing import Any

from bootwatch.protocol.errorbody import ERROR_BODY_SCHEMA

#: operations without the provider prefix (health, metrics, the document itself)
UNPREFIXED = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})
PROVIDER_PARAMETER: dict[str, Any] = {
    "name": "provider",
    "in": "path",
    "required": True,
    "description": "a custom or shared provider's name",
    "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,63}$"},
}
_ERROR_REF = {"$ref": "#/components/schemas/MaaError"}
_ERROR_RESPONSE: dict[str, Any] = {
    "description": "MAA error body; the same code is in the x-ms-error-code header",
    "headers": {"x-ms-error-code": {"schema": {"type": "string"}}},
    "content": {"application/json": {"schema": _ERROR_REF}},
}
#: status codes any operation may answer with an MAA error body
_ERROR_STATUSES = ("400", "401", "403", "404", "405", "409", "413", "429", "503")

API_VERSION_PARAMETER: dict[str, Any] = {
    "name": "api-version",
    "in": "query",
    "required": False,
    "description": "MAA api-version (any non-empty value is served the same way)",
    "schema": {"type": "string"},
}

AZUREGUEST_OPERATION: dict[str, Any] = {
    "operationId": "attest_azure_guest",
    "summary": "Attest an Azure guest VM (TPM quote, event log, ephemeral key)",
    "description": (
        "maa-protocol 1.3. The body is {\"AttestationInfo\": base64url(JSON)} (or the "
        "inner JSON itself). Permit: 200 {\"token\": base64url(sealed envelope)}; deny: "
        "400 PolicyEvaluationError naming the rule; evidence that does not verify: 400 "
        "InvalidParameter naming the check. Served by the service's ASGI fast path."
    ),
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["AttestationInfo"],
                    "properties": {"AttestationInfo": {"type": "string"}},
                }
            }
        },
    },
    "responses": {
        "200": {
            "description": "permitted: the token sealed to the VM's ephemeral key",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["token"],
                        "properties": {"token": {"type": "string"}},
                    }
                }
            },
        }
    },
}


def _text_body(description: str) -> dict[str, Any]:
    return {
        "required": True,
        "description": description,
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }


_JWS_OR_OBJECT: dict[str, Any] = {
    "required": True,
    "description": "a signed JWS whose payload is {\"policyCertificate\": JWK with x5c}, sent "
    "as a JSON string (Azure SDK), as {\"policyCertificateToAdd|Remove\": jws}, or bare",
    "content": {
        "application/json": {
            "schema": {"oneOf": [{"type": "string"}, {"type": "object"}]}
        }
    },
}

#: request bodies of the routes that read the raw body themselves (FastAPI cannot see them)
REQUEST_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("/attest/Tpm", "post"): {
        "required": True,
        "description": "TPM protocol message: {\"data\": base64url(JSON message)}",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["data"],
                    "properties": {"data": {"type": "string"}},
                }
            }
        },
    },
    ("/policies/{attestation_type}", "put"): _text_body(
        "the policy text, or a policy JWS {\"AttestationPolicy\": base64url(text)} "
        "(Isolated providers: signed by a policy signer)"
    ),
    ("/policies/{attestation_type}:reset", "post"): _text_body(
        "a JWS with an empty payload (Isolated providers: signed by a policy signer)"
    ),
    ("/certificates:add", "post"): _JWS_OR_OBJECT,
    ("/certificates:remove", "post"): _JWS_OR_OBJECT,
}


def _with_errors(operation: dict[str, Any]) -> dict[str, Any]:
    responses = operation.setdefault("responses", {})
    responses.pop("422", None)
    for status in _ERROR_STATUSES:
        responses.setdefault(status, copy.deepcopy(_ERROR_RESPONSE))
    return operation


def complete_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the fast path, the provider-prefixed paths and MAA error answers (in place)."""
    paths: dict[str, Any] = schema.setdefault("paths", {})
    paths["/attest/AzureGuest"] = {"post": copy.deepcopy(AZUREGUEST_OPERATION)}
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["MaaError"] = ERROR_BODY_SCHEMA
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    for path, item in paths.items():
        for method, operation in item.items():
            _with_errors(operation)
            body = REQUEST_BODIES.get((path, method))
            if body is not None:
                operation["requestBody"] = copy.deepcopy(body)
            params = operation.setdefault("parameters", [])
            if path not in UNPREFIXED and not any(p["name"] == "api-version" for p in params):
                params.append(API_VERSION_PARAMETER)
    prefixed: dict[str, Any] = {}
    for path, item in paths.items():
        if path in UNPREFIXED:
            continue
        copy_item = copy.deepcopy(item)
        for operation in copy_item.values():
            operation["operationId"] = operation.get("operationId", path) + "_provider"
            operation["parameters"] = [PROVIDER_PARAMETER, *operation.get("parameters", [])]
        prefixed["/providers/{provider}" + path] = copy_item
    paths.update(prefixed)
    return schema


__all__ = ["AZUREGUEST_OPERATION", "complete_schema"]
