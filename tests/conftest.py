"""Fixtures shared across test modules."""

import pytest

from fixtures_cluster import local_cluster


@pytest.fixture(scope="session")
def cl():
    """One two-node Ray cluster (head + worker, 1 CPU and 1 declared GPU each) with a `bench server`, for every
    test that only needs a cluster: started once (tens of seconds), torn down by PID at the end of the session.
    Tests that kill or remove nodes start their own."""
    with local_cluster() as c:
        yield c
