"""The one reader of the app's state: everything a request handler needs from the
service's container comes through :func:`service_state` (a FastAPI dependency, also
called directly by the attestation fast path and the middleware).

``create_app`` stores the container (:class:`~bootwatch.service.state.ServiceState`) on
``app.state.bw`` and nothing else; no other module reads ``app.state``, so tests can
replace the container with ``app.dependency_overrides[service_state]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, cast

from fastapi import Depends
from starlette.requests import Request

if TYPE_CHECKING:
    from bootwatch.service.state import ServiceState

__all__ = ["State", "service_state"]


def service_state(request: Request) -> ServiceState:
    """The container of the app serving ``request``."""
    return cast("ServiceState", request.app.state.bw)


#: ``state: State`` in a handler's signature = the app's container
State = Annotated["ServiceState", Depends(service_state)]
