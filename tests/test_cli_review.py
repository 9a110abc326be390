"""CLI review fixes (found in review; each test failed on the code before).

What a VM, a log file or a server wrote reaches the operator's terminal: as rich markup
and terminal escapes from ``log show`` / ``log state``, as raw control characters in an
error line, as Unicode direction overrides anywhere.  Bad input and odd answers gave
tracebacks (exit 1) instead of one line and exit 2.  The admin token went to any http://
address.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from bwwebhook import serve_http, stop_http
from click.testing import CliRunner

from bootwatch.cli._console import printable, safe
from bootwatch.cli.main import cli, main
from bootwatch.errors import ConfigError, ServiceError
from bootwatch.monitor.client import MonitorClient

EVIL = (b"[red]RED[/red] [link=https://evil.example]click[/link] [/oops] "
        b"\x1b]0;PWNED\x07\x1b[2J \xe2\x80\xae")  # ... and U+202E (right-to-left override)


def _log(path: Path) -> Path:
    """A crypto-agile TCG log whose text events carry markup and terminal escapes."""
    sizes = {0x4: 20, 0xB: 32}
    spec = (b"Spec ID Event03\x00" + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, 2)
            + b"".join(struct.pack("<HH", a, n) for a, n in sizes.items()) + b"\x00")
    out = struct.pack("<II20sI", 0, 3, bytes(20), len(spec)) + spec

    def measured(pcr: int, etype: int, data: bytes) -> bytes:
        rec = struct.pack("<III", pcr, etype, 2)
        rec += struct.pack("<H", 0x4) + hashlib.sha1(data).digest()
        rec += struct.pack("<H", 0xB) + hashlib.sha256(data).digest()
        return rec + struct.pack("<I", len(data)) + data

    out += measured(4, 0x80000007, EVIL)
    out += measured(9, 0xD, b"kernel_cmdline: /vmlinuz root=/dev/sda " + EVIL + b"\x00")
    path.write_bytes(out)
    return path


def test_printable_writes_out_direction_overrides_and_invisible_characters() -> None:
    assert printable("web\u202egnp.exe") == "web\\u202egnp.exe"
    assert printable("a\u200bb\u2066c\ufeff") == "a\\u200bb\\u2066c\\ufeff"
    assert safe("[red]x\x1b") == "\\[red]x\\x1b"


@pytest.mark.parametrize("command", ["show", "state"])
def test_log_commands_print_a_hostile_log_as_text(tmp_path: Path, command: str) -> None:
    res = CliRunner().invoke(cli, ["log", command, str(_log(tmp_path / "evil.bin"))])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert "\x1b" not in res.output and "\x07" not in res.output
    assert "\u202e" not in res.output
    if command == "show":
        assert "[red]RED[/red]" in res.output.replace("\n", "")  # the text, not a style


class _NotJson(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html>Sign in to the hotel wifi \x1b]0;PWNED\x07</html>"
        self.send_response(200 if "/vms" in self.path else 502)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def portal() -> Iterator[str]:
    server, url = serve_http(_NotJson)
    yield url
    stop_http(server)


def test_an_answer_that_is_not_json_is_a_one_line_error(
        portal: str, capsys: pytest.CaptureFixture[str]) -> None:
    with MonitorClient(portal) as client, pytest.raises(ServiceError, match="not JSON"):
        client.get("/vms")
    for argv in (["vm", "list", "--monitor", portal],
                 ["vm", "show", "x", "--monitor", portal]):
        with pytest.raises(SystemExit) as code:
            main(argv)
        assert code.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("bootwatch: error:") and "\x1b" not in err and "Traceback" not in err


def test_a_bad_ca_bundle_is_a_one_line_error(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    for ca in (str(bad), str(tmp_path / "missing.pem")):
        with pytest.raises(SystemExit) as code:
            main(["vm", "list", "--monitor", "https://127.0.0.1:1", "--ca", ca])
        assert code.value.code == 2
        assert "cannot load the CA bundle" in capsys.readouterr().err


def test_the_token_never_crosses_the_network_in_clear_text() -> None:
    with pytest.raises(ConfigError, match="clear text"):
        MonitorClient("http://192.0.2.2:8080", token="admin-secret")
    MonitorClient("http://127.0.0.1:8080", token="admin-secret").close()  # loopback
    MonitorClient("https://192.0.2.2:8443", token="admin-secret").close()
    MonitorClient("http://192.0.2.2:8080").close()  # no token: nothing to leak


@pytest.mark.parametrize("argv", [
    ["monitor", "dry-run", "--policy", "README.md", "--since", "infh"],
    ["provider", "list", "--db", "postgresql://bw:pw@127.0.0.1:1/none"],
])
def test_bad_input_and_a_database_away_are_exit_2(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as code:
        main(argv)
    assert code.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("bootwatch: error:") and "pw" not in err.split("error:", 1)[1]


def test_a_trust_anchor_file_without_a_certificate_is_refused(tmp_path: Path) -> None:
    from bootwatch.service.attestation import load_attestation_config
    from bootwatch.service.settings import Settings

    empty = tmp_path / "anchors.pem"
    empty.write_text("# no certificate here\n")
    with pytest.raises(ConfigError, match="no PEM certificate found"):
        load_attestation_config(Settings(data_dir=tmp_path, trust_anchors_path=str(empty)))
