"""Every docstring example runs as written, pasted into a fresh interpreter: it imports what it uses
(no names lent by the module it sits in, nor by the test runner)."""

import doctest
import importlib
import pkgutil
import warnings

import pytest

import flowforge


def _examples() -> list[doctest.DocTest]:
    found = []
    for info in pkgutil.walk_packages(flowforge.__path__, "flowforge."):
        if info.name.endswith("__main__"):  # running it would run the command line
            continue
        module = importlib.import_module(info.name)
        found += [test for test in doctest.DocTestFinder(exclude_empty=True).find(module, module.__name__, globs={})
                  if test.examples]
    return sorted(found, key=lambda test: test.name)


EXAMPLES = _examples()


def test_the_finder_finds_the_docstring_examples():
    assert len(EXAMPLES) > 100  # a finder that found none would pass every test below


@pytest.mark.parametrize("example", EXAMPLES, ids=[test.name for test in EXAMPLES])
def test_the_docstring_example_runs_in_a_fresh_interpreter(example):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = []
    with warnings.catch_warnings():  # some examples fit for a few steps: their warnings are not the point
        warnings.simplefilter("ignore")
        outcome = runner.run(example, out=report.append)
    assert outcome.failed == 0, "".join(report)
