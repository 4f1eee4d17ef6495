"""The `crail` module against a real `crail cluster` (three `crail node` processes on
127.0.0.2-4): broadcast variables, shuffles written from bytes, memoryviews and numpy arrays
and read back as memoryviews over the received bytes, the store, and the errors."""

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import crail

CRAIL = os.environ.get("CRAIL_BIN", str(Path(__file__).parents[2] / "target/debug/crail"))
HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A 3-node cluster; yields its client configuration file."""
    config = tmp_path_factory.mktemp("cluster") / "client.toml"
    env = {k: v for k, v in os.environ.items() if k != "CRAIL_CONF"}
    proc = subprocess.Popen(
        [CRAIL, "cluster", "--dram", "256MiB", "--listen", "127.0.0.1:0",
         "--config-out", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    deadline = time.monotonic() + 60
    while not config.exists():
        assert proc.poll() is None, "the cluster stopped"
        assert time.monotonic() < deadline, "the cluster did not start"
        time.sleep(0.05)
    yield str(config)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def test_broadcast_reaches_every_node_and_destroy_frees_it(cluster):
    clients = [crail.Client.connect(cluster, "py-bcast", host=h) for h in HOSTS]
    assert [c.host for c in clients] == HOSTS
    assert clients[0].app == "py-bcast"
    value = os.urandom(3 << 20)
    assert clients[0].put_broadcast("model", value) == len(value)
    for c in clients:
        assert c.get_broadcast("model") == value
    with pytest.raises(crail.AlreadyExists):
        clients[1].put_broadcast("model", b"again")
    clients[2].destroy_broadcast("model")
    with pytest.raises(crail.NotFound) as err:
        clients[0].get_broadcast("model")
    assert "model" in str(err.value)
    with pytest.raises(crail.InvalidArgument):
        clients[0].put_broadcast("../escape", b"x")
    clients[0].end_application()
    for c in clients:
        c.close()


def test_shuffle_round_trip_without_copies(cluster):
    with crail.Client.connect(cluster, "py-shuffle", host=HOSTS[0]) as driver:
        shuffle = driver.register_shuffle(1, maps=3, partitions=2, serializer="fixed:4:4")
        assert (shuffle.maps, shuffle.partitions) == (3, 2)
        records = {0: {}, 1: {}}  # partition -> map -> bytes in write order
        for m, host in enumerate(HOSTS):
            with crail.Client.connect(cluster, "py-shuffle", host=host) as engine:
                w = engine.shuffle(1).map_writer(m)
                # Bytes, a memoryview, a numpy array, one record: all records of 8 bytes.
                b = bytes([m]) * 8 * 10
                w.write(0, b)
                records[0][m] = b
                mv = memoryview(bytearray(bytes([m + 10]) * 16))
                w.write(1, mv)
                records[1][m] = bytes(mv)
                arr = np.full(64, m + 20, dtype=np.uint8)
                w.write(1, arr)
                records[1][m] += arr.tobytes()
                w.write_record(0, b"abcd", b"efgh")
                records[0][m] += b"abcdefgh"
                sizes = w.commit()
                assert sizes == [80 + 8, 16 + 64]
                with pytest.raises(crail.ClosedError):
                    w.commit()
        for p in (0, 1):
            got = {}
            for chunk in shuffle.read(p):
                view = memoryview(chunk)
                assert view.readonly and len(view) == len(chunk)
                assert chunk.partition == p
                got[chunk.map] = got.get(chunk.map, b"") + view.tobytes()
            assert got == records[p]
        # Both partitions at once.
        assert sum(len(c) for c in shuffle.read(0, 2)) == 3 * (88 + 80)
        driver.unregister_shuffle(1)
        with pytest.raises(crail.NotFound):
            driver.shuffle(1)


def test_bad_input_raises_typed_errors(cluster):
    with pytest.raises(crail.CrailError):
        crail.Client.connect("/no/such/config.toml", "py-bad")
    with pytest.raises(crail.InvalidArgument):
        crail.Client.connect(cluster, "py-bad", host="not-an-address")
    with pytest.raises(crail.ServiceError):
        crail.Client.connect(cluster, "py-bad", host="127.0.0.99")
    c = crail.Client.connect(cluster, "py-bad", host=HOSTS[1])
    with pytest.raises(crail.InvalidArgument):
        c.register_shuffle(2, maps=1, partitions=1, serializer="yaml")
    shuffle = c.register_shuffle(2, maps=1, partitions=1, serializer="fixed:4:4")
    with pytest.raises(crail.AlreadyExists):
        c.register_shuffle(2, maps=1, partitions=1)
    w = shuffle.map_writer(0)
    with pytest.raises(crail.InvalidArgument):
        w.write(5, b"12345678")
    with pytest.raises(TypeError):
        w.write(0, "not bytes")
    with pytest.raises(crail.InvalidArgument):
        shuffle.read(1, 1)
    w.abort()
    with pytest.raises(crail.ClosedError):
        w.write(0, b"12345678")
    assert "crail-shuffle" in c.list("/")
    with pytest.raises(crail.NotFound):
        c.list("/no/such/dir")
    c.end_application()
    c.close()
    with pytest.raises(crail.ClosedError):
        c.get_broadcast("x")
