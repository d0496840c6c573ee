import pytest


@pytest.fixture(scope="session")
def prefect_server():
    """A temporary Prefect server (SQLite) shared by the flow tests."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield
