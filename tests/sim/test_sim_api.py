"""medtwin.sim exports exactly its public names, sorted."""

from __future__ import annotations

import types

import medtwin.sim


def test_all_is_sorted_and_exactly_the_public_names() -> None:
    public = {name for name, value in vars(medtwin.sim).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType)}
    assert medtwin.sim.__all__ == sorted(medtwin.sim.__all__)
    assert set(medtwin.sim.__all__) == public


def test_importing_sim_does_not_import_simglucose() -> None:
    """simglucose is an optional extra with a slow import; it loads on first use only."""
    import subprocess
    import sys

    code = "import sys, medtwin.sim; print('simglucose' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"
