"""required_pcr_mask reaching the pipeline in a shape the evaluator should have refused.

The evaluator refuses a non-integer mask (tests/policy/test_evaluator_mutants.py); the
pipeline must not treat one that got through anyway as "no PCR required" (issue 17).
"""

from __future__ import annotations

from types import MappingProxyType

import pytest

from bootwatch.attest.pipeline import _missing_required_pcrs
from bootwatch.policy.evaluator import PROPERTY_DEFAULTS, EvaluationResult

LINUX = tuple(range(8))


def _result(mask: object, *, explicit: bool = True) -> EvaluationResult:
    props = {**PROPERTY_DEFAULTS, "required_pcr_mask": mask}
    return EvaluationResult(
        permitted=True, deciding_rule="line 3: => permit();", reason="", issued=(),
        properties=MappingProxyType(props), trace=(), incoming=(),
        explicit_properties=frozenset({"required_pcr_mask"} if explicit else ()))


def test_integer_mask_is_enforced() -> None:
    assert _missing_required_pcrs(_result(0xFF), LINUX) == []
    assert _missing_required_pcrs(_result(0x1FF), LINUX) == [8]
    assert _missing_required_pcrs(_result(0x800001), LINUX) == [23]


def test_default_mask_is_not_applied_to_azurevm() -> None:
    assert _missing_required_pcrs(_result(0xFFFFFF, explicit=False), LINUX) == []


@pytest.mark.parametrize("mask", ["10", "0xff", True, None, 1.5])
def test_non_integer_mask_fails_closed(mask: object) -> None:
    assert _missing_required_pcrs(_result(mask), LINUX) == list(range(8, 24))
