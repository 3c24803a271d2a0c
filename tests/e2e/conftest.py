import pytest

from tests.e2e.harness import Daemon, FakeVertex, config_dir, file_log_override


@pytest.fixture(scope="session")
def fake(tmp_path_factory):
    fake = FakeVertex(tmp_path_factory.mktemp("fake"))
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def seed_daemon(fake, tmp_path_factory):
    """The daemon on the sample config, as the seed walk-through sets it up."""
    workdir = tmp_path_factory.mktemp("seed")
    log_path = workdir / "claude.json"
    daemon = Daemon(config_dir(workdir, file_log_override(log_path)), fake.seed_environment(), workdir)
    daemon.file_log = log_path
    yield daemon
    daemon.stop()
