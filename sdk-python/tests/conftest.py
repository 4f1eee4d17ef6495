"""A real `crail cluster` (three `crail node` processes on 127.0.0.2-4) for every test of the
session; `cluster` yields its client configuration file."""

import pytest

from crail_cluster import CRAIL, HOSTS, crail_cluster  # noqa: F401


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    with crail_cluster(tmp_path_factory.mktemp("cluster")) as config:
        yield config
