"""Log lines as an operator reads them: one JSON object a line, secrets masked, and no value or locale that makes
writing a line fail (a failing log line would fail the request that wrote it). Each case runs in a process of its
own, as `g4g serve` configures logging once per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

_SCRIPT = textwrap.dedent(
    """
    import logging, structlog
    from app.core.logging import configure_logging
    configure_logging("info")
    log = structlog.get_logger("g4g.test")
    structlog.contextvars.bind_contextvars(request_id="r-1")
    log.info("request", path="/v1/schools/नेपाल-ü", status=200)
    log.info("odd_values", huge=2**70, by_status={200: 3, 404: 1}, thing=object())
    log.warning("rotated", api_key="sk_live_secret", webhook_secret="whsec_x", roster_code="AB12")
    logging.getLogger("a.library").warning("library line %s", "ü")
    log.debug("not at info")
    """
)


def _lines(**env: str) -> list[dict[str, object]]:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        env={**os.environ, **env},
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert done.stderr == b""
    return [json.loads(line) for line in done.stdout.decode("utf-8").splitlines()]


def test_every_line_is_json_with_its_request_id_and_secrets_masked() -> None:
    request, odd, rotated, library = _lines()
    assert request["event"] == "request" and request["request_id"] == "r-1" and request["level"] == "info"
    assert request["path"] == "/v1/schools/नेपाल-ü"
    assert odd["huge"] == 2**70 and odd["by_status"] == {"200": 3, "404": 1}
    assert str(odd["thing"]).startswith("<object object")
    assert rotated["api_key"] == rotated["webhook_secret"] == rotated["roster_code"] == "[redacted]"
    assert library["event"] == "library line ü" and library["level"] == "warning"


def test_a_line_is_written_whatever_the_locale_can_encode() -> None:
    """With stdout set to ASCII, text in any script is still written (JSON-escaped), not an encoding error."""
    request = _lines(PYTHONIOENCODING="ascii", LC_ALL="C")[0]
    assert request["path"] == "/v1/schools/नेपाल-ü"


def test_lines_and_other_text_reach_a_log_file_in_the_order_they_were_written(tmp_path: Path) -> None:
    """Text written to the stream by other means (a library's handler, a `print` to it) waits in the text layer's
    buffer; our lines go out after it, not before."""
    path = tmp_path / "service.log"
    script = textwrap.dedent(
        f"""
        import structlog
        from app.core.logging import configure_logging
        stream = open({str(path)!r}, "w", encoding="utf-8")
        configure_logging("info", stream=stream)
        print("written first", file=stream)
        structlog.get_logger("g4g.test").info("logged second")
        print("written third", file=stream)
        stream.close()
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    first, second, third = path.read_text(encoding="utf-8").splitlines()
    assert (first, json.loads(second)["event"], third) == ("written first", "logged second", "written third")
