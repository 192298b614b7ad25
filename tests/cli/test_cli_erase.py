"""`medtwin keys erase-patient`: destroys the patient's data key, logged; verify reports it."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from medtwin.cli import app

runner = CliRunner()


def test_keys_erase_patient_then_verify(tmp_path: Path) -> None:
    site = ["--data-dir", str(tmp_path / "site")]
    assert runner.invoke(app, ["keys", "add-patient", "pt-7", *site]).exit_code == 0
    unexplained = runner.invoke(app, ["keys", "erase-patient", "pt-7", *site])
    assert unexplained.exit_code != 0
    erased = runner.invoke(app, ["keys", "erase-patient", "pt-7", "--reason", "ticket 42",
                                 *site])
    assert erased.exit_code == 0, erased.output
    assert "pt-7 erased" in erased.output
    twice = runner.invoke(app, ["keys", "erase-patient", "pt-7", "--reason", "again", *site])
    assert twice.exit_code == 1
    assert "already erased" in twice.output
    verified = runner.invoke(app, ["verify", *site])
    assert verified.exit_code == 0, verified.output
    assert "1 patients erased: 0 of their records" in verified.output
