"""Fleet drift scenarios: what happens to which lab VMs, and when (docs/lab.md).

A scenario is a small YAML (or JSON, which YAML reads too) document.  It is read
through PyYAML's node graph rather than into plain dicts so that every error can
say where it is: :class:`ScenarioError` carries the file, line, column and the
field path (``events[2].action``).  Nothing here touches a VM or the network;
:mod:`bootwatch.lab.fleet` plays a parsed :class:`Scenario`.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import yaml

from bootwatch.errors import ConfigError

__all__ = [
    "DEFAULT_SCENARIO",
    "MAX_SCENARIO_BYTES",
    "Action",
    "DriftEvent",
    "Scenario",
    "ScenarioError",
    "Selector",
    "When",
    "load_scenario",
    "parse_scenario",
]

MAX_SCENARIO_BYTES: Final = 1024 * 1024
MAX_EVENTS: Final = 10_000
_VERSION: Final = 1


class ScenarioError(ConfigError):
    """A scenario that cannot be used; says which file, line, column and field."""

    code = "scenario_invalid"

    def __init__(self, message: str, *, source: str, line: int | None = None,
                 column: int | None = None, field: str = "") -> None:
        self.source = source
        self.line = line
        self.column = column
        self.field = field
        where = source
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        super().__init__(f"{where}: {field + ': ' if field else ''}{message}")


class Action(enum.StrEnum):
    """What can happen to a VM.  The first four change what the VM boots or sends;
    the last two stop its reports."""

    IMAGE_UPDATE = "image_update"      # reboot into the other image of the A/B pair
    DBX_UPDATE = "dbx_update"          # reboot with the Microsoft DBX update applied
    TAMPER = "tamper"                  # the agent sends a log the vTPM did not measure
    SECURE_BOOT_OFF = "secure_boot_off"  # reboot into an image booted with Secure Boot off
    AGENT_DOWN = "agent_down"          # the agent process is gone (until ``for`` ends)
    NETWORK_DOWN = "network_down"      # the agent runs but reaches nothing (until ``for``)

    @property
    def reboots(self) -> bool:
        return self in (Action.IMAGE_UPDATE, Action.DBX_UPDATE, Action.SECURE_BOOT_OFF)

    @property
    def lasts(self) -> bool:
        """Actions that end (``for``): the VM comes back to how it was."""
        return self in (Action.TAMPER, Action.AGENT_DOWN, Action.NETWORK_DOWN)


@dataclass(frozen=True)
class When:
    """A time from the start of the run: seconds, or a share of ``--duration``."""

    seconds: float | None = None
    fraction: float | None = None

    def resolve(self, duration: float) -> float:
        if self.fraction is not None:
            return duration * self.fraction
        return float(self.seconds or 0.0)

    def __str__(self) -> str:
        return f"{self.fraction * 100:g}%" if self.fraction is not None else f"{self.seconds:g}s"


@dataclass(frozen=True)
class Selector:
    """Which VMs: a count, a share of the fleet, or explicit VM indexes (0-based)."""

    count: int | None = None
    fraction: float | None = None
    indexes: tuple[int, ...] = ()

    def how_many(self, fleet: int) -> int:
        if self.indexes:
            return len(self.indexes)
        if self.fraction is not None:
            return max(1, round(fleet * self.fraction))
        return self.count or 0


@dataclass(frozen=True)
class DriftEvent:
    at: When
    action: Action
    vms: Selector
    #: for actions that end: how long until the VM comes back (None: until the end)
    lasts: When | None
    #: where the event is in its file (1-based), for errors found when it is planned
    line: int


@dataclass(frozen=True)
class Scenario:
    events: tuple[DriftEvent, ...]
    #: the fleet's A/B images, relative to the shared corpus folder (or absolute)
    images: tuple[str, str] = ("eventlogs/go-tpm-tools/cos-93-amd-sev.bin",
                               "eventlogs/go-tpm-tools/cos-101-amd-sev.bin")
    secure_boot_off_log: str = "eventlogs/go-tpm-tools/ubuntu-2104-no-secure-boot.bin"
    #: the DBX update applied by ``dbx_update`` (an authenticated variable, as published)
    dbx_update: str = "secureboot/DBXUpdate_amd64.bin"
    source: str = "<built-in default>"
    #: where the file fields given in the document are (field, line, column; 1-based):
    #: a file the fleet finds missing later is named with its place, as parse errors are
    places: tuple[tuple[str, int, int], ...] = ()

    def error(self, field: str, message: str) -> ScenarioError:
        """A :class:`ScenarioError` about ``field`` at its place in the document."""
        for name, line, column in self.places:
            if name == field:
                return ScenarioError(message, source=self.source, line=line, column=column,
                                     field=field)
        return ScenarioError(message, source=self.source, field=field)


_DEFAULT_TEXT: Final = """\
# the built-in scenario: times are shares of --duration, counts shares of --vms
version: 1
events:
  - {at: 20%, action: image_update, vms: 2%}
  - {at: 30%, action: dbx_update, vms: 1%}
  - {at: 40%, action: secure_boot_off, vms: 1%}
  - {at: 45%, action: tamper, vms: 1%, for: 20%}
  - {at: 25%, action: agent_down, vms: 1%, for: 50%}
  - {at: 35%, action: network_down, vms: 1%, for: 45%}
"""

_TIME = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|%)?\s*$")
_TOP_KEYS: Final = frozenset({"version", "images", "secure_boot_off_log", "dbx_update", "events"})
_EVENT_KEYS: Final = frozenset({"at", "action", "vms", "for"})


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, node: yaml.Node | None, field: str, message: str) -> ScenarioError:
        if node is None:
            return ScenarioError(message, source=self.source, field=field)
        mark = node.start_mark
        return ScenarioError(message, source=self.source, line=mark.line + 1,
                             column=mark.column + 1, field=field)

    def mapping(self, node: yaml.Node, field: str, allowed: frozenset[str]
                ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, field, "must be a mapping (key: value)")
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                raise self.fail(key, field, "keys must be plain names")
            name = str(key.value)
            sub = f"{field}.{name}" if field else name
            if name not in allowed:
                raise self.fail(key, sub, "unknown key (expected one of "
                                          f"{', '.join(sorted(allowed))})")
            if name in out:
                raise self.fail(key, sub, "given twice")
            out[name] = (key, value)
        return out

    def scalar(self, node: yaml.Node, field: str) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, field, "must be a single value")
        return str(node.value)

    def when(self, node: yaml.Node, field: str, *, positive: bool = False) -> When:
        text = self.scalar(node, field)
        m = _TIME.match(text)
        if m is None:
            raise self.fail(node, field, f"{text!r} is not a time: use seconds (30, 30s), "
                                         "minutes (2m) or a share of --duration (25%)")
        value, unit = float(m.group(1)), m.group(2) or "s"
        if unit == "%":
            if value > 100:
                raise self.fail(node, field, f"{text!r}: a share of the run is 0-100%")
            when = When(fraction=value / 100)
        else:
            when = When(seconds=value * (60 if unit == "m" else 1))
        if positive and (when.fraction or when.seconds or 0) <= 0:
            raise self.fail(node, field, "must be longer than 0")
        return when

    def selector(self, node: yaml.Node, field: str) -> Selector:
        if isinstance(node, yaml.SequenceNode):
            indexes: list[int] = []
            for i, item in enumerate(node.value):
                text = self.scalar(item, f"{field}[{i}]")
                if not text.isdigit() or int(text) > 10_000_000:
                    raise self.fail(item, f"{field}[{i}]",
                                    f"{text!r} is not a VM index (0, 1, ...)")
                indexes.append(int(text))
            if not indexes:
                raise self.fail(node, field, "an empty list selects no VM")
            if len(set(indexes)) != len(indexes):
                raise self.fail(node, field, "a VM index is listed twice")
            return Selector(indexes=tuple(indexes))
        text = self.scalar(node, field).strip()
        if text.endswith("%"):
            try:
                share = float(text[:-1])
            except ValueError:
                share = -1.0
            if not 0 < share <= 100:
                raise self.fail(node, field, f"{text!r}: a share of the fleet is above 0 and at "
                                             "most 100%")
            return Selector(fraction=share / 100)
        if not text.isdigit() or not 1 <= int(text) <= 10_000_000:
            raise self.fail(node, field, f"{text!r} is not a VM count (1, 2, ...), a share "
                                         "(5%) or a list of VM indexes ([0, 3])")
        return Selector(count=int(text))

    def event(self, node: yaml.Node, field: str) -> DriftEvent:
        keys = self.mapping(node, field, _EVENT_KEYS)
        for required in ("at", "action", "vms"):
            if required not in keys:
                raise self.fail(node, field, f"missing key '{required}'")
        action_node = keys["action"][1]
        text = self.scalar(action_node, f"{field}.action")
        try:
            action = Action(text)
        except ValueError:
            raise self.fail(action_node, f"{field}.action",
                            f"{text!r} is not an action (one of "
                            f"{', '.join(a.value for a in Action)})") from None
        lasts: When | None = None
        if "for" in keys:
            if not action.lasts:
                raise self.fail(keys["for"][0], f"{field}.for",
                                f"'{action.value}' does not end: only tamper, agent_down and "
                                "network_down take 'for'")
            lasts = self.when(keys["for"][1], f"{field}.for", positive=True)
        return DriftEvent(
            at=self.when(keys["at"][1], f"{field}.at"), action=action,
            vms=self.selector(keys["vms"][1], f"{field}.vms"), lasts=lasts,
            line=node.start_mark.line + 1,
        )


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """Parse a scenario document; :class:`ScenarioError` says where it is wrong."""
    r = _Reader(source)
    if len(text.encode("utf-8", errors="replace")) > MAX_SCENARIO_BYTES:
        raise ScenarioError(f"larger than {MAX_SCENARIO_BYTES} bytes", source=source)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise ScenarioError(f"not YAML or JSON: {exc.problem or exc}", source=source,
                            line=mark.line + 1 if mark else None,
                            column=mark.column + 1 if mark else None) from None
    except yaml.reader.ReaderError as exc:
        # a character YAML does not allow (a NUL, a control character): PyYAML says
        # only its offset, so the line and column are counted here
        pos = min(max(exc.position, 0), len(text))
        line_start = text.rfind("\n", 0, pos) + 1
        raise ScenarioError(f"not YAML or JSON: character #x{exc.character:04x}: {exc.reason}",
                            source=source, line=text.count("\n", 0, pos) + 1,
                            column=pos - line_start + 1) from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"not YAML or JSON: {exc}", source=source) from None
    if root is None:
        raise ScenarioError("the scenario is empty", source=source)
    top = r.mapping(root, "", _TOP_KEYS)
    if "version" in top:
        node = top["version"][1]
        if r.scalar(node, "version") != str(_VERSION):
            raise r.fail(node, "version", f"unsupported version (this bootwatch reads {_VERSION})")
    if "events" not in top:
        raise r.fail(root, "events", "missing: a scenario lists its drift events")
    events_node = top["events"][1]
    if not isinstance(events_node, yaml.SequenceNode):
        raise r.fail(events_node, "events", "must be a list")
    if len(events_node.value) > MAX_EVENTS:
        raise r.fail(events_node, "events", f"more than {MAX_EVENTS} events")
    events = tuple(r.event(n, f"events[{i}]") for i, n in enumerate(events_node.value))
    kwargs: dict[str, object] = {}
    places: list[tuple[str, int, int]] = []

    def place(node: yaml.Node, field: str) -> None:
        places.append((field, node.start_mark.line + 1, node.start_mark.column + 1))

    if "images" in top:
        node = top["images"][1]
        if not isinstance(node, yaml.SequenceNode) or len(node.value) != 2:
            raise r.fail(node, "images", "must be a list of two event logs [A, B]")
        kwargs["images"] = (r.scalar(node.value[0], "images[0]"),
                            r.scalar(node.value[1], "images[1]"))
        place(node.value[0], "images[0]")
        place(node.value[1], "images[1]")
    for key in ("secure_boot_off_log", "dbx_update"):
        if key in top:
            kwargs[key] = r.scalar(top[key][1], key)
            place(top[key][1], key)
    return Scenario(events=events, source=source, places=tuple(places),
                    **kwargs)  # type: ignore[arg-type]


def load_scenario(path: Path | None) -> Scenario:
    """The scenario in ``path`` (YAML or JSON), or the built-in default when None."""
    if path is None:
        return parse_scenario(_DEFAULT_TEXT, "<built-in default>")
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_SCENARIO_BYTES + 1)
    except OSError as exc:
        raise ScenarioError(f"cannot read it: {exc.strerror}", source=str(path)) from None
    if len(raw) > MAX_SCENARIO_BYTES:
        raise ScenarioError(f"larger than {MAX_SCENARIO_BYTES} bytes", source=str(path))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"not UTF-8 text (byte {exc.start})", source=str(path)) from None
    return parse_scenario(text, str(path))


DEFAULT_SCENARIO: Final = _DEFAULT_TEXT
