"""Drive every operation of an OpenAPI document through schemathesis, the same way for
the service and the monitor: ``check(case)`` gets each generated case; the examples are
derandomised (the same cases on every run) and without hypothesis's database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings


def run_every_operation(schema: Any, check: Callable[[Any], None], *,
                        max_examples: int) -> int:
    """Run ``check`` on ``max_examples`` cases of each operation; returns how many
    operations the document has."""
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        run = settings(
            max_examples=max_examples,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )(given(case=operation.as_strategy())(check))
        run()
    return len(operations)
