"""`aihub serve` refuses bad limits with a clear line and exit status 2, before it binds anything."""

from __future__ import annotations

import pytest

from hub import cli


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--ping-interval", "0"], "--ping-interval"),
        (["--ping-timeout", "-1"], "--ping-timeout"),
        (["--drain-timeout", "-0.5"], "--drain-timeout"),
        (["--call-timeout", "0"], "--call-timeout"),
        (["--max-workspaces", "0"], "--max-workspaces"),
        (["--drain-timeout", "inf"], "--drain-timeout"),
        (["--ping-interval", "nan"], "--ping-interval"),
    ],
)
def test_a_bad_limit_is_refused_with_status_2(
    flags: list[str], said: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AIHUB_LLM_BASE_URL", "AIHUB_LLM_MODEL"):
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["serve", "--port", "1", *flags]) == 2
    assert said in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--drain-timeout", "--ping-interval", "--ping-timeout"])
def test_a_limit_that_is_not_a_number_is_a_usage_error(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["serve", flag, "soon"])
    assert exited.value.code == 2 and "invalid float value" in capsys.readouterr().err


def test_a_drain_of_zero_is_allowed() -> None:
    args = cli.parser().parse_args(["serve", "--drain-timeout", "0"])
    assert args.drain_timeout == 0.0
