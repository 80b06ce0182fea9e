"""``serve`` with no API tokens on a non-loopback address would publish the site's live state to
anyone: it refuses to start (exit 2, a message naming the fix) unless told ``--insecure-read``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wattwheel.api.auth import is_loopback, open_bind_refusal, parse_tokens

WATTWHEEL = [sys.executable, "-c", "from wattwheel.cli import main; main()"]


def _serve(tmp_path: Path, *args: str, tokens: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "WATTWHEEL_TOKENS"}
    if tokens:
        env["WATTWHEEL_TOKENS"] = tokens
    # A missing site file stops serve right after the bind check: no server is ever started.
    return subprocess.run(
        [*WATTWHEEL, "serve", "--site", str(tmp_path / "no-site.toml"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**env, "COLUMNS": "200"},
    )


def test_open_reads_on_a_public_address_refuse_to_start(tmp_path: Path) -> None:
    res = _serve(tmp_path, "--host", "0.0.0.0")
    assert res.returncode == 2
    assert "--host 0.0.0.0 is not a loopback address" in res.stderr
    assert "--insecure-read" in res.stderr and "site file not found" not in res.stderr


@pytest.mark.parametrize(
    ("args", "tokens"),
    [
        (("--host", "0.0.0.0", "--insecure-read"), ""),
        (("--host", "0.0.0.0"), "ops:operator:abcdefgh1234"),
    ],
)
def test_tokens_local_or_insecure_read_get_past_the_check(
    tmp_path: Path, args: tuple[str, ...], tokens: str
) -> None:
    res = _serve(tmp_path, *args, tokens=tokens)
    assert res.returncode == 2 and "site file not found" in res.stderr
    assert "not a loopback address" not in res.stderr


def test_loopback_and_refusal_rules() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.5.0.1", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.5", "example.org"))
    tokens = parse_tokens("a:viewer:abcdefgh")
    assert open_bind_refusal("0.0.0.0", {}, False) is not None
    assert open_bind_refusal("0.0.0.0", {}, True) is None
    assert open_bind_refusal("0.0.0.0", tokens, False) is None
    assert open_bind_refusal("localhost", {}, False) is None
