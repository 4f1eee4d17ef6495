"""Starting a real `crail cluster` (three `crail node` processes on 127.0.0.2-4) for tests."""

import os
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

CRAIL = os.environ.get("CRAIL_BIN", str(Path(__file__).parents[2] / "target/debug/crail"))
HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]


@contextmanager
def crail_cluster(workdir: Path, dram: str = "256MiB"):
    """A cluster for the block; yields its client configuration file."""
    config = workdir / "client.toml"
    env = {k: v for k, v in os.environ.items() if k != "CRAIL_CONF"}
    proc = subprocess.Popen(
        [CRAIL, "cluster", "--dram", dram, "--listen", "127.0.0.1:0",
         "--config-out", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while not config.exists():
            assert proc.poll() is None, "the cluster stopped"
            assert time.monotonic() < deadline, "the cluster did not start"
            time.sleep(0.05)
        yield str(config)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
