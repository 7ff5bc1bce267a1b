"""The errors module: typed twice, and importing nothing from the library."""

import ast
from pathlib import Path

import pytest

import sklears_neural.exceptions as exceptions
from sklears_neural.core import serialization


def test_exceptions_import_nothing_from_the_library():
    tree = ast.parse(Path(exceptions.__file__).read_text())
    imported = [
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    ]
    assert imported and not [name for name in imported if name.startswith("sklears")]


@pytest.mark.parametrize("error, bases", [
    (exceptions.ModelFileError, (ValueError,)),
    (exceptions.NetworkTooLargeError, (ValueError, MemoryError)),
    (exceptions.TrainingDivergedError, (ValueError, FloatingPointError)),
    (exceptions.PersistenceWarning, (UserWarning,)),
])
def test_errors_are_also_the_types_callers_catch(error, bases):
    assert issubclass(error, bases)


def test_the_file_format_raises_the_public_error():
    assert serialization.ModelFileError is exceptions.ModelFileError
    assert sorted(exceptions.__all__) == exceptions.__all__
