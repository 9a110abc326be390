"""The fail-closed steps the NSG and Azure Firewall evaluators share
(:func:`destination_unknowns`, :func:`source_unknowns`, :func:`fail_closed`), checked
directly: the evaluators' own tests reach them only through whole rule sets, and a
slip here would let an unknown group or VM address allow traffic in both at once."""

from __future__ import annotations

import ipaddress

import pytest

from bootwatch.net.matching import (
    Context,
    destination_unknowns,
    fail_closed,
    parse_address,
    source_unknowns,
)
from bootwatch.net.target import parse_target

UNIT = ipaddress.ip_network("192.0.2.10/32")
GROUP = ("/subscriptions/s/resourceGroups/r/providers/x/groups/g",)


def _ctx(vm_ip: str | None = None) -> Context:
    return Context(None, parse_target("192.0.2.10:443"),
                   ipaddress.ip_address(vm_ip) if vm_ip else None)


def test_destination_matched_groups_or_no_match() -> None:
    assert destination_unknowns(True, GROUP, "destinationIpGroups") == ()
    assert destination_unknowns(False, GROUP, "destinationIpGroups") == (
        "whether the destination is in its destinationIpGroups",)
    assert destination_unknowns(False, (), "destinationIpGroups") is None


@pytest.mark.parametrize(("entries", "vm_ip", "groups", "expected"), [
    (["10.0.0.0/8"], "10.0.0.4", GROUP, ()),  # a covering entry beats the groups
    (["10.9.0.0/16"], "10.0.0.4", GROUP, ("whether the VM is in its sourceIpGroups",)),
    ([], "10.0.0.4", GROUP, ("whether the VM is in its sourceIpGroups",)),
    (["10.0.0.0/8"], None, (), ("the VM's address (give --vm-ip)",)),
    (["10.9.0.0/16"], "10.0.0.4", (), None),  # outside every source
])
def test_source(entries: list[str], vm_ip: str | None, groups: tuple[str, ...],
                expected: tuple[str, ...] | None) -> None:
    ctx = _ctx(vm_ip)
    parsed = [parse_address(e, ctx, field_name="src", source="") for e in entries]
    assert source_unknowns(parsed, UNIT, ctx, groups=groups,
                           groups_name="sourceIpGroups") == expected


def test_nothing_unknown_matches_silently() -> None:
    ctx = _ctx()
    assert fail_closed([], deny=False, who="r", ctx=ctx) == (True, "")
    assert ctx.warnings == []


def test_unknowns_match_a_deny_and_not_an_allow_and_say_so() -> None:
    ctx = _ctx()
    unknown = ["the VM's address (give --vm-ip)", "the source port"]
    said = "the VM's address (give --vm-ip) and the source port unknown; "
    assert fail_closed(unknown, deny=True, who="Block/grp", ctx=ctx) == (
        True, said + "assumed to match this Deny")
    assert fail_closed(unknown, deny=False, who="Allow/grp", ctx=ctx) == (
        False, said + "assumed not to match this Allow")
    assert ctx.warnings == [f"Block/grp: {said}assumed to match this Deny",
                            f"Allow/grp: {said}assumed not to match this Allow"]
