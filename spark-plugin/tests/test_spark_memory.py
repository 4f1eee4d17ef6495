"""A map task's buffers come from Spark's memory manager: a shuffle into 10,000 partitions,
every partition written by every map, runs in executors of 1 GiB (with a buffer and a
compression stream per open partition, 10,000 of them would take about 1.3 GB of heap)."""

import pytest

pyspark = pytest.importorskip("pyspark")
from test_spark import crail_session  # noqa: E402


def test_ten_thousand_partitions_per_map_fit_a_one_gib_executor(cluster, jar):
    spark = crail_session(cluster, jar, {
        # The maps write all 10,000 partitions; AQE reads them in a few tasks.
        "spark.sql.shuffle.partitions": "10000",
        "spark.sql.adaptive.advisoryPartitionSizeInBytes": "64m",
    })
    try:
        rows = 500_000
        df = spark.range(0, rows, 1, 2).selectExpr("id % 100000 AS k",
                                                   "concat('payload-', id) AS v")
        got = df.repartition("k").selectExpr("sum(k)", "count(v)").collect()[0]
        assert tuple(got) == (rows // 100_000 * sum(range(100_000)), rows)
    finally:
        spark.stop()
