"Fixtures shared by the tests; shared helper functions live in helpers.py."
from pathlib import Path
import pytest
from helpers import ROOT

@pytest.fixture(scope="session")
def root() -> Path: return ROOT
