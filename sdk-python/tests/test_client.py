"""The `crail` module against a real `crail cluster` (three `crail node` processes on
127.0.0.2-4): broadcast variables, shuffles written from bytes, memoryviews and numpy arrays
and read back as memoryviews over the received bytes, the store, and the errors."""

import os
import pickle

import numpy as np
import pytest

import crail

from conftest import HOSTS


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
    with pytest.raises(TypeError, match="items of 8 bytes"):
        w.write(0, np.zeros(1, dtype=np.float64))
    w.write(0, np.zeros(8, dtype=np.int8))  # one-byte items of another format
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


def test_store_operations(cluster):
    with crail.Client.connect(cluster, "py-store", host=HOSTS[2]) as c:
        c.mkdir("/py-store")
        data = np.arange(1 << 20, dtype=np.uint8)
        assert c.write_file("/py-store/a", data) == len(data)
        assert c.read_file("/py-store/a") == data.tobytes()
        st = c.stat("/py-store/a")
        assert (st["type"], st["size"]) == ("file", len(data))
        assert st["blocks"] >= 1 and st["modified"] >= st["created"] > 0
        assert c.stat("/py-store")["type"] == "directory"
        assert c.exists("/py-store/a") and not c.exists("/py-store/b")
        c.rename("/py-store/a", "/py-store/b")
        assert c.list("/py-store") == ["b"]
        with pytest.raises(crail.AlreadyExists):
            c.write_file("/py-store/b", b"again")
        with pytest.raises(crail.NotFound):
            c.read_file("/py-store/a")
        with pytest.raises(crail.InvalidArgument):
            c.read_file("/py-store")
        with pytest.raises(crail.CrailError):
            c.delete("/py-store")  # not empty
        c.delete("/py-store", recursive=True)
        assert not c.exists("/py-store")


def test_records_by_range_sorted_and_as_columns(cluster):
    rng = np.random.default_rng(7)
    maps, parts = 3, 4
    records = rng.integers(0, 256, size=(maps, 5000, 12), dtype=np.uint8)
    keys = [bytes(r[:4]) for r in records.reshape(-1, 12)]
    partitioner = crail.RangePartitioner.from_sample(keys[::7], parts)
    assert partitioner.partitions == parts and len(partitioner.splits) == parts - 1
    again = pickle.loads(pickle.dumps(partitioner))
    assert again.splits == partitioner.splits
    assert all(again.partition(k) == partitioner.partition(k) for k in keys[:100])
    with crail.Client.connect(cluster, "py-range", host=HOSTS[0]) as c:
        shuffle = c.register_shuffle(3, maps=maps, partitions=parts, serializer="fixed:4:8")
        assert shuffle.serializer == "fixed:4:8"
        for m in range(maps):
            w = shuffle.map_writer(m)
            half = 2500
            w.write_by_range(partitioner, records[m, :half])  # a 2-d numpy array, rows
            rest = np.ascontiguousarray(records[m, half:])
            w.write_columns_by_range(
                partitioner, np.ascontiguousarray(rest[:, :4]), np.ascontiguousarray(rest[:, 4:])
            )
            assert sum(w.commit()) == 5000 * 12
        everything = []
        for p in range(parts):
            sorted_ = np.frombuffer(shuffle.read_sorted(p), np.uint8).reshape(-1, 12)
            mine = [r for r in records.reshape(-1, 12) if partitioner.partition(bytes(r[:4])) == p]
            # Stable: equal keys keep map order, then write order.
            assert sorted_.tobytes() == b"".join(
                bytes(r) for r in sorted(mine, key=lambda r: bytes(r[:4]))
            )
            k, v = shuffle.read_sorted_columns(p)
            assert bytes(k) == sorted_[:, :4].tobytes() and bytes(v) == sorted_[:, 4:].tobytes()
            pairs = list(shuffle.records(p, sorted="radix"))
            assert pairs == [(bytes(r[:4]), bytes(r[4:])) for r in sorted_]
            everything.extend(shuffle.records(p))
        assert len(everything) == maps * 5000
        flat = records.reshape(-1, 12)
        assert sorted(k + v for k, v in everything) == sorted(bytes(r) for r in flat)
        # One sorted buffer for a range of partitions is in order across them.
        whole = np.frombuffer(shuffle.read_sorted(0, parts), np.uint8).reshape(-1, 12)
        assert len(whole) == maps * 5000
        assert [bytes(r[:4]) for r in whole] == sorted(keys)

        # Bad input: a kv shuffle, a partitioner of other partitions, torn records, bad splits.
        kv = c.register_shuffle(4, maps=1, partitions=2, serializer="kv")
        w = kv.map_writer(0)
        with pytest.raises(crail.InvalidArgument, match="fixed-length"):
            w.write_by_range(crail.RangePartitioner([b"m"]), b"x" * 12)
        with pytest.raises(crail.InvalidArgument, match="fixed-length"):
            kv.read_sorted_columns(0)
        w.abort()
        w = shuffle.map_writer(0, attempt=1)
        with pytest.raises(crail.InvalidArgument, match="makes 2 partitions"):
            w.write_by_range(crail.RangePartitioner([b"m"]), b"x" * 12)
        with pytest.raises(crail.InvalidArgument, match="truncated"):
            w.write_by_range(partitioner, b"x" * 13)
        with pytest.raises(crail.InvalidArgument, match="keys but"):
            w.write_columns_by_range(partitioner, b"k" * 8, b"v" * 8)
        w.abort()
        with pytest.raises(crail.InvalidArgument, match="comes after"):
            crail.RangePartitioner([b"b", b"a"])
        with pytest.raises(crail.InvalidArgument):
            shuffle.read_sorted(0, 9)
        with pytest.raises(crail.InvalidArgument):
            shuffle.read_sorted(0, sorter="bogo")
        c.end_application()


def test_a_dead_cluster_raises_instead_of_hanging(tmp_path):
    """Calls on a client whose cluster was killed raise CrailError subclasses, promptly."""
    import time

    from crail_cluster import crail_cluster, kill_cluster

    with crail_cluster(tmp_path, dram="64MiB") as config:
        c = crail.Client.connect(config, "py-dead", host=HOSTS[0])
        c.put_broadcast("v", b"x" * 1000)
        shuffle = c.register_shuffle(9, maps=1, partitions=1, serializer="fixed:4:4")
        kill_cluster(config)
    time.sleep(1)
    start = time.monotonic()
    for call in (
        lambda: c.list("/"),
        lambda: c.get_broadcast("v"),
        lambda: shuffle.map_writer(0),
        lambda: list(shuffle.read(0)),
        lambda: c.write_file("/f", b"data"),
    ):
        with pytest.raises(crail.CrailError) as err:
            call()
        assert str(err.value)
    assert time.monotonic() - start < 120
    c.close()
