"""Starting a real `crail cluster` (three `crail node` processes on 127.0.0.2-4) for tests."""

import os
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

CRAIL = os.environ.get("CRAIL_BIN", str(Path(__file__).parents[2] / "target/debug/crail"))
HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]

# The `crail cluster` process of each running cluster, by its configuration file.
_CLUSTERS: dict[str, subprocess.Popen] = {}


@contextmanager
def crail_cluster(workdir: Path, dram: str = "256MiB", keep_going: bool = False,
                  nodes: int = 3, extra: tuple[str, ...] = ()):
    """A cluster of `nodes` nodes (127.0.0.2, ...) for the block; yields its client
    configuration file. `keep_going`: the cluster serves on when a node dies; `extra`: more
    `crail cluster` flags."""
    config = workdir / "client.toml"
    env = {k: v for k, v in os.environ.items() if k != "CRAIL_CONF"}
    proc = subprocess.Popen(
        [CRAIL, "cluster", "--nodes", str(nodes), "--dram", dram, "--listen", "127.0.0.1:0",
         "--config-out", str(config), *(["--keep-going"] if keep_going else []), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while not config.exists():
            assert proc.poll() is None, "the cluster stopped"
            assert time.monotonic() < deadline, "the cluster did not start"
            time.sleep(0.05)
        _CLUSTERS[str(config)] = proc
        yield str(config)
    finally:
        _CLUSTERS.pop(str(config), None)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def kill_node(config: str, host: str) -> None:
    """Kills the node process of `host` (its datanode and its services) of the cluster
    of `config`, at once."""
    signal_node(config, host, signal.SIGKILL)


def signal_node(config: str, host: str, sig: signal.Signals) -> None:
    """Sends `sig` to the node process of `host` (SIGSTOP pauses it as a swap storm or a
    stopped VM would, SIGCONT resumes it)."""
    parent = str(_CLUSTERS[config].pid)
    pids = subprocess.run(["pgrep", "-P", parent, "-f", "--", f"--crail-embedded-node {host}$"],
                          capture_output=True, text=True).stdout.split()
    assert pids, f"no crail node on {host}"
    for pid in pids:
        os.kill(int(pid), sig)


def kill_cluster(config: str) -> None:
    """Kills the `crail cluster` of `config` at once (its nodes stop when their stdin closes)."""
    proc = _CLUSTERS[config]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
