"""The one reader of the app's and the request's state: everything a request handler
needs from the service's container comes through :func:`service_state` (a FastAPI
dependency, also called directly by the attestation fast path and the middleware), and
the one thing kept on a request (its resolved provider) through
:func:`request_provider` / :func:`remember_provider`.

``create_app`` stores the container (:class:`~bootwatch.service.state.ServiceState`) on
``app.state.bw`` and nothing else; no other module reads ``app.state``, so tests can
replace the container with ``app.dependency_overrides[service_state]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, cast

from fastapi import Depends
from starlette.requests import Request

if TYPE_CHECKING:
    from bootwatch.service.providers import ProviderContext
    from bootwatch.service.state import ServiceState

__all__ = ["State", "remember_provider", "request_provider", "service_state"]


def service_state(request: Request) -> ServiceState:
    """The container of the app serving ``request``."""
    return cast("ServiceState", request.app.state.bw)


#: ``state: State`` in a handler's signature = the app's container
State = Annotated["ServiceState", Depends(service_state)]


def request_provider(request: Request) -> ProviderContext | None:
    """The provider already resolved for ``request`` (None: not yet)."""
    return cast("ProviderContext | None", getattr(request.state, "bw_provider", None))


def remember_provider(request: Request, ctx: ProviderContext) -> None:
    """Keep ``ctx`` for the rest of ``request`` (its dependencies resolve it once)."""
    request.state.bw_provider = ctx
