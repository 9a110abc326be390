"""bootwatch.agent: the guest side of Trusted Launch attestation.

Modules (imported explicitly, so ``bootwatch.agent.client`` does not pay for tpm2-pytss):
``tpm`` (ESAPI helpers, handles, TCTI handling), ``evidence`` (collect an AzureGuest
request: :func:`bootwatch.agent.evidence.collect_evidence`), ``unseal`` (open a sealed
response in the vTPM: :func:`bootwatch.agent.unseal.unseal`).

Importing this package keeps httpx's command-line client out of the agent: httpx's
``__init__`` imports ``httpx._main`` (which imports rich, pygments and click) whenever
those are installed -- they are, for bootwatch's own CLI -- at a cost of about 5 MB and
50 ms of CPU in every process that imports httpx, for a tool the agent never runs.
httpx guards that import with ``except ImportError`` and falls back to a stub ``main``;
a ``None`` entry in :data:`sys.modules` is Python's documented way to make an import
raise ImportError.  Only done while httpx is not imported yet (a process that already
has it keeps it as it is); the sys.modules tests in tests/agent pin the result.
"""

import sys

__all__: list[str] = []

if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
