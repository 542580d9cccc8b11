"""Fixtures shared by the hardening tests."""

import pytest
import torch


@pytest.fixture
def fresh_dynamo():
    """Dynamo's caches empty before and after the test: its compiles are its own."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
