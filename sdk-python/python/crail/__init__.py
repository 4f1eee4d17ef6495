"""crail: the Python SDK of crail-rs.

Connect an application to the node it runs on, then use shuffles (map writers, partition
readers that hand out chunks without copies) and broadcast variables::

    import crail

    with crail.Client.connect("/tmp/crail.toml", "my-app", host="127.0.0.2") as c:
        c.put_broadcast("lookup", b"...")
        shuffle = c.register_shuffle(0, maps=1, partitions=2, serializer="kv")
        w = shuffle.map_writer(0)
        w.write_record(0, b"key", b"value")
        w.commit()
        for chunk in shuffle.read(0):
            view = memoryview(chunk)  # the received bytes, not a copy

Every call that waits on the cluster releases the GIL. Errors are ``CrailError`` or one of its
subclasses. ``crail.ray`` runs sorts and group-bys of Ray Datasets through crail's shuffle and
hands large objects to Ray tasks through its broadcast service.
"""

from ._crail import (
    AlreadyExists,
    Buffer,
    Chunk,
    Client,
    ClosedError,
    CrailError,
    FetchFailed,
    InvalidArgument,
    MapWriter,
    NotFound,
    PartitionReader,
    RangePartitioner,
    RecordReader,
    ServiceError,
    Shuffle,
    StoreFull,
)

__all__ = [
    "AlreadyExists",
    "Buffer",
    "Chunk",
    "Client",
    "ClosedError",
    "CrailError",
    "FetchFailed",
    "InvalidArgument",
    "MapWriter",
    "NotFound",
    "PartitionReader",
    "RangePartitioner",
    "RecordReader",
    "ServiceError",
    "Shuffle",
    "StoreFull",
]
