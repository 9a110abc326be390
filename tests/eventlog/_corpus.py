"""Corpus tables shared by the event-log tests (loaded by path: importlib mode)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("BOOTWATCH_SHARED", REPO.parent / "shared")).resolve()
EVENTLOGS = SHARED / "corpus" / "eventlogs"


@dataclass(frozen=True)
class ManifestRow:
    path: str
    events: int | None  # None: not a log (negative test)
    expected: tuple[str, ...]


def manifest_rows() -> list[ManifestRow]:
    """Log rows of MANIFEST.md with their "events" column and expected-values files."""
    rows: list[ManifestRow] = []
    for line in (EVENTLOGS / "MANIFEST.md").read_text().splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        path = cells[0].strip("`")
        events_cell, expected_cell = cells[7], cells[8]
        if expected_cell.startswith("(is expected data)"):
            continue
        m = re.match(r"^(\d+)$", events_cell) or re.search(r"independent count (\d+)", events_cell)
        assert m is not None, f"MANIFEST events column not understood for {path}: {events_cell}"
        count = int(m.group(1))
        expected = tuple(
            name
            for name in re.findall(r"`([^`]+)`", expected_cell)
            if name.endswith((".json", ".yaml", ".yml", ".txt"))
        )
        rows.append(ManifestRow(path, count if count > 0 else None, expected))
    return rows


#: Expected PCRs that the MANIFEST or the expected file itself says are not in
#: the firmware log (PCR10 = IMA, PCR14 = EVE user space, SHA-256 PCR5 of a
#: SHA-1-format log).  Keyed by expected-values file; values are (bank, pcr).
NOT_IN_FIRMWARE_LOG: dict[str, set[tuple[str, int]]] = {
    "go-attestation/sb_cert_eventlog.expected.json": {("sha1", 10), ("sha256", 10)},
    "go-eventlog/linux_tpm12.json": {("sha1", 10)},
    "evepcr/14.5.1bcbf.pcr.yml": {("sha256", 14)},
    "go-attestation/ebs_event_missing_eventlog.expected.json": {("sha256", 5)},
}


def expected_pairs() -> list[tuple[str, str]]:
    """(log, expected-values file) for every expected file beside a log."""
    pairs = [
        (row.path, f"{row.path.rsplit('/', 1)[0]}/{exp}")
        for row in manifest_rows()
        for exp in row.expected
    ]
    return sorted(set(pairs))
