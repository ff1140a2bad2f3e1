"""Names every doctest in src/ may use without importing them (as the docstrings' examples do)."""

import math

import numpy
import pytest
import torch


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace.update(torch=torch, math=math, np=numpy)
