"""The one exception tree of bootwatch.

Every error bootwatch raises on purpose derives from :class:`BootwatchError`.
Layers raise the most specific subclass and carry *where* the problem is
(byte offset, field, line:column) so a person can act on it.  Errors are
translated only at the edges: the service turns them into MAA error bodies,
the CLI into exit codes and one line on stderr.

Sub-packages may define finer subclasses in their own ``errors`` module, but
always below one of the classes here, so the edges need to know only these.
"""

from __future__ import annotations

__all__ = [
    "BootwatchError",
    "ConfigError",
    "ConflictError",
    "CryptoError",
    "EventDeliveryError",
    "EventLogError",
    "EventLogLimitError",
    "EventRejectedError",
    "ExpectedValuesError",
    "InputError",
    "LabError",
    "NetworkInputError",
    "NotFoundError",
    "OperationRefusedError",
    "PolicyError",
    "PolicyEvaluationError",
    "PolicyParsingError",
    "PolicySignatureError",
    "ProtocolError",
    "RollbackRefusedError",
    "ServiceError",
    "StorageError",
    "TpmDeviceError",
    "TpmStructureError",
    "TransportError",
    "VerificationError",
]


class BootwatchError(Exception):
    """Root of every error bootwatch raises on purpose."""

    #: Short machine-readable code, stable across releases (used in JSON and logs).
    code: str = "bootwatch_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# --- malformed input --------------------------------------------------------


class InputError(BootwatchError):
    """Input that cannot be read: malformed, truncated, oversized."""

    code = "invalid_input"


class EventLogError(InputError):
    """A TCG event log that cannot be framed or decoded.

    ``offset`` is the byte offset into the log where the problem is, and
    ``event_index`` the index of the record being read (0 = the first record,
    the header included), when known.
    """

    code = "eventlog_invalid"

    def __init__(
        self,
        message: str,
        *,
        offset: int | None = None,
        event_index: int | None = None,
    ) -> None:
        where = []
        if event_index is not None:
            where.append(f"event {event_index}")
        if offset is not None:
            where.append(f"byte offset {offset}")
        full = f"{message} (at {', '.join(where)})" if where else message
        super().__init__(full)
        self.reason = message
        self.offset = offset
        self.event_index = event_index


class EventLogLimitError(EventLogError):
    """A log, event or event count over a configured limit (hostile-input guard)."""

    code = "eventlog_limit"


class ExpectedValuesError(InputError):
    """A file of expected PCR values that cannot be read (file and line named)."""

    code = "expected_values_invalid"


class TpmStructureError(InputError):
    """A TPM 2.0 structure that cannot be unmarshalled.

    Names the structure, the field and the byte offset into the structure.
    """

    code = "tpm_structure_invalid"

    def __init__(self, structure: str, field: str, offset: int, problem: str) -> None:
        super().__init__(f"{structure}.{field} at byte offset {offset}: {problem}")
        self.structure = structure
        self.field = field
        self.offset = offset
        self.problem = problem


class ProtocolError(InputError):
    """A wire message (AzureGuest request, sealed envelope, token) that is malformed.

    ``field`` names the JSON path of the offending field.
    """

    code = "protocol_invalid"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class NetworkInputError(InputError):
    """A service-tag document, a rules file or a network option that cannot be used.

    The message names where: ``source`` (a file or URL), ``line`` (1-based, for JSON
    and text files) and ``field`` (a JSON path such as ``securityRules[2].properties.
    priority``, or an option such as ``--source``), so one line tells what to fix.
    """

    code = "network_input_invalid"

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        where = ""
        if source:
            where = f"{source}:{line}: " if line is not None else f"{source}: "
        elif line is not None:
            where = f"line {line}: "
        if field:
            where += f"{field}: "
        super().__init__(f"{where}{message}")
        self.reason = message
        self.source = source
        self.line = line
        self.field = field


# --- policy -----------------------------------------------------------------


class PolicyError(BootwatchError):
    """Base of policy-language errors."""

    code = "policy_error"


class PolicyParsingError(PolicyError, InputError):
    """A policy text that does not parse; carries line:column and what was expected."""

    code = "PolicyParsingError"

    def __init__(
        self,
        message: str,
        *,
        line: int | None = None,
        column: int | None = None,
        expected: tuple[str, ...] = (),
    ) -> None:
        where = f"line {line}:{column}: " if line is not None else ""
        super().__init__(f"{where}{message}")
        self.line = line
        self.column = column
        self.expected = expected


class PolicyEvaluationError(PolicyError):
    """Evaluation failed (a function error, a limit exceeded, a type error)."""

    code = "PolicyEvaluationError"


class PolicySignatureError(PolicyError):
    """A policy JWS whose signature or signer is not acceptable."""

    code = "PolicySignatureError"


# --- verification -----------------------------------------------------------


class VerificationError(BootwatchError):
    """Evidence that was read but did not verify, where a caller asked to raise."""

    code = "verification_failed"


class CryptoError(BootwatchError):
    """A cryptographic operation that failed (bad key, bad ciphertext, bad tag)."""

    code = "crypto_failed"


# --- environment: devices, network, storage, configuration ------------------


class ConfigError(BootwatchError):
    """Settings or command-line options that are inconsistent or invalid."""

    code = "config_invalid"


class TpmDeviceError(BootwatchError):
    """A TPM command that failed on a real or simulated TPM."""

    code = "tpm_device_failed"


class LabError(BootwatchError):
    """A lab (swtpm) VM that cannot be created, started or used."""

    code = "lab_failed"


class StorageError(BootwatchError):
    """The database or data directory cannot be used."""

    code = "storage_failed"


class NotFoundError(BootwatchError):
    """A named thing (a provider, a policy) does not exist.  Storage raises it; the HTTP
    edge answers 404 ``NotFound``, the CLI exits 2 with the message."""

    code = "not_found"


class ConflictError(BootwatchError):
    """A write that conflicts with what exists (a provider of that name already does).
    The HTTP edge answers 409 ``InvalidOperation``."""

    code = "conflict"


class RollbackRefusedError(ConflictError):
    """A replayed signed document (a policy, a reset, a signer change) that would roll
    an isolated provider back.  The HTTP edge answers 409 ``RollbackRefused``."""

    code = "rollback_refused"


class OperationRefusedError(BootwatchError):
    """A well-formed request for something the target does not allow (a policy write
    on a shared provider, a signer limit).  The HTTP edge answers 400
    ``InvalidOperation``."""

    code = "operation_refused"


class EventDeliveryError(BootwatchError):
    """Outcome events could not be handed to their sink durably (the monitor refused or
    was unreachable, JetStream did not acknowledge); the relay keeps them and retries."""

    code = "event_delivery_failed"


class EventRejectedError(EventDeliveryError):
    """The receiver refused outcome events for good (malformed, too large): retrying
    the same events cannot help, so the relay logs and drops them."""

    code = "event_rejected"


class TransportError(BootwatchError):
    """The attestation service could not be reached.

    ``step`` names the step that failed: ``dns``, ``proxy_connect``,
    ``tcp_connect``, ``tls``, ``http_status``, ``timeout`` or ``protocol``;
    ``target`` the URL (or proxy) it failed against; ``detail`` the message
    without the step prefix (what a status file shows); ``retry_after`` the
    seconds a 429/503 asked the client to wait, when it said.
    """

    code = "transport_failed"

    def __init__(
        self,
        message: str,
        *,
        step: str,
        target: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.detail = message
        self.target = target
        self.retry_after = retry_after


class ServiceError(BootwatchError):
    """An error the attestation service returned (MAA error body), client side."""

    code = "service_error"

    def __init__(
        self, message: str, *, status: int, error_code: str, retry_after: float | None = None
    ) -> None:
        super().__init__(f"HTTP {status} {error_code}: {message}")
        self.status = status
        self.error_code = error_code
        self.retry_after = retry_after
