"""The documentation runs: code blocks in doc/*.md and docstring examples.

Every fenced ``python`` block of a guide is executed in order, in one
namespace per file, so a block may use names an earlier block defined. A
block that raises fails the test with the block's line number. Docstring
examples run as doctests, one test per module.
"""

import doctest
import importlib
import pkgutil
import re
import traceback
import warnings
from pathlib import Path

import pytest

import sklears_neural

DOC_DIR = Path(__file__).parents[1] / "doc"
GUIDES = ["user_guide.md", "architecture.md", "families.md", "scaling.md", "search.md",
          "nas.md", "rl_multi_agent.md"] + sorted(
    str(path.relative_to(DOC_DIR))
    for folder in ("explain", "generative") for path in (DOC_DIR / folder).glob("*.md")
)
# A fence opening "```python" at the start of a line, up to the closing "```".
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def python_blocks(text):
    """``(line of the opening fence, source)`` of every python block in ``text``."""
    return [
        (text.count("\n", 0, match.start()) + 1, match.group(1))
        for match in FENCE.finditer(text)
    ]


def test_block_extraction():
    text = "intro\n```python\na = 1\n```\n\n```bash\nls\n```\n```python\nb = a\n```\n"
    assert python_blocks(text) == [(2, "a = 1\n"), (9, "b = a\n")]


@pytest.mark.parametrize("name", GUIDES)
def test_guide_code_blocks_run(name):
    path = DOC_DIR / name
    blocks = python_blocks(path.read_text(encoding="utf-8"))
    assert blocks, f"{name} has no python blocks"
    namespace = {"__name__": f"doc_{path.stem}"}
    with warnings.catch_warnings():
        # Blocks may change warning filters; keep that out of other tests.
        for line, source in blocks:
            # Padded so that tracebacks give line numbers of the .md file.
            code = compile("\n" * line + source, str(path), "exec")
            try:
                exec(code, namespace)
            except Exception as error:
                frames = traceback.extract_tb(error.__traceback__)
                where = [f.lineno for f in frames if f.filename == str(path)] or [line]
                pytest.fail(
                    f"{name}, block at line {line}, failing at line {where[-1]}: "
                    f"{type(error).__name__}: {error}"
                )


def _package_modules():
    names = [sklears_neural.__name__]
    for info in pkgutil.walk_packages(sklears_neural.__path__, "sklears_neural."):
        names.append(info.name)
    return names


def _modules_with_examples():
    """Modules with at least one docstring example: the others would pass a
    doctest run vacuously, so they get no test."""
    finder = doctest.DocTestFinder()
    return [
        name for name in _package_modules()
        if any(test.examples for test in finder.find(importlib.import_module(name)))
    ]


def test_docstring_examples_exist():
    # Guards the doctest run below against silently finding nothing.
    finder = doctest.DocTestFinder()
    found = sum(
        len(test.examples)
        for name in _package_modules()
        for test in finder.find(importlib.import_module(name))
    )
    assert found >= 10 and len(_modules_with_examples()) >= 3


@pytest.mark.parametrize("module_name", _modules_with_examples())
def test_docstring_examples(module_name):
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder()
    # The flags numpydoc examples rely on: "..." in outputs, wrapped arrays.
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = []
    with warnings.catch_warnings():
        for test in finder.find(module):
            runner.run(test, out=report.append)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, "".join(report)
