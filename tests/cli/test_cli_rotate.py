"""`medtwin keys rotate`, `keys rewrap` and `keys retire-kek`: the KEK changes, every patient
stays readable, the rotation is logged and the old KEK is retired only when unneeded."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from medtwin.cli import app
from medtwin.crypto import SiteKeys

runner = CliRunner()


def test_keys_rotate_then_verify_then_retire(tmp_path: Path) -> None:
    site = ["--data-dir", str(tmp_path / "site")]
    for patient in ("pt-1", "pt-2", "pt-3"):
        assert runner.invoke(app, ["keys", "add-patient", patient, *site]).exit_code == 0
    assert runner.invoke(app, ["keys", "erase-patient", "pt-3", "--reason", "ticket 42",
                               *site]).exit_code == 0
    unexplained = runner.invoke(app, ["keys", "rotate", *site])
    assert unexplained.exit_code != 0
    rotated = runner.invoke(app, ["keys", "rotate", "--reason", "ticket 51", "--batch", "1",
                                  *site])
    assert rotated.exit_code == 0, rotated.output
    output = " ".join(rotated.output.split())               # as if unwrapped by the console
    found = re.search(r"KEK rotated: (kek-[0-9a-f]+) -> (kek-[0-9a-f]+)", output)
    assert found is not None, rotated.output
    old, new = found.groups()
    assert "2 data keys re-wrapped under " + new in output
    assert SiteKeys.load(tmp_path / "site" / "keys").kek_ids == [new, old]
    verified = runner.invoke(app, ["verify", *site])
    assert verified.exit_code == 0, verified.output
    assert "1 site KEK rotations and 0 retirements logged" in verified.output
    current = runner.invoke(app, ["keys", "retire-kek", new, *site])
    assert current.exit_code == 1
    assert "is the current KEK" in current.output
    retired = runner.invoke(app, ["keys", "retire-kek", old, *site])
    assert retired.exit_code == 0, retired.output
    assert SiteKeys.load(tmp_path / "site" / "keys").kek_ids == [new]
    assert "logged as record #" in " ".join(retired.output.split())
    reverified = runner.invoke(app, ["verify", *site])
    assert "1 site KEK rotations and 1 retirements logged" in " ".join(reverified.output.split())
    again = runner.invoke(app, ["keys", "rewrap", *site])
    assert again.exit_code == 0, again.output
    assert "0 data keys re-wrapped" in again.output


def test_keys_rotate_log_then_verify_follows_the_endorsement(tmp_path: Path) -> None:
    site = ["--data-dir", str(tmp_path / "site")]
    assert runner.invoke(app, ["keys", "add-patient", "pt-1", *site]).exit_code == 0
    first = SiteKeys.load(tmp_path / "site" / "keys").log_key.key_id
    assert runner.invoke(app, ["keys", "rotate-log", *site]).exit_code != 0   # no reason
    rotated = runner.invoke(app, ["keys", "rotate-log", "--reason", "ticket 52", "--suite",
                                  "ml-dsa-65", *site])
    assert rotated.exit_code == 0, rotated.output
    output = " ".join(rotated.output.split())
    found = re.search(r"log key rotated: (log-[0-9a-f]+) -> (log-[0-9a-f]+) \(ml-dsa-65",
                      output)
    assert found is not None and found.group(1) == first, rotated.output
    keys = SiteKeys.load(tmp_path / "site" / "keys")
    assert keys.log_key.key_id == found.group(2) and keys.log_key.suite == "ml-dsa-65"
    verified = runner.invoke(app, ["verify", *site])
    assert verified.exit_code == 0, verified.output
    assert (f"1 log key rotations logged, each endorsed by the key it replaced; the key in "
            f"force is {found.group(2)}") in " ".join(verified.output.split())
    unknown = runner.invoke(app, ["keys", "rotate-log", "--reason", "x", "--suite", "rsa",
                                  *site])
    assert unknown.exit_code == 1 and "unknown signature suite" in unknown.output
