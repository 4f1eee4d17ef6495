"""A Spark job whose shuffle fills the crail cluster's DRAM fails with crail's store-full error:
the typed error crosses the node's service and the JNI bridge as StoreFull, and the engine
does not take it for a lost node (no failover to another node, which would be full too)."""

import operator
import os

import pytest

pyspark = pytest.importorskip("pyspark")
from crail_cluster import crail_cluster  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402


@pytest.fixture(scope="module")
def small_cluster(tmp_path_factory):
    # 4 MiB of DRAM per node: four blocks, fewer than one map's group files need.
    with crail_cluster(tmp_path_factory.mktemp("small"), dram="4MiB") as config:
        yield config


def test_a_full_store_fails_the_job_with_a_store_full_error(small_cluster, jar):
    spark = (
        SparkSession.builder.master("local-cluster[2,1,1024]")
        .appName("crail-store-full-test")
        .config("spark.ui.enabled", "false")
        .config("spark.task.maxFailures", "1")
        .config("spark.shuffle.manager", "io.crail.spark.CrailShuffleManager")
        .config("spark.jars", jar)
        .config("spark.executor.extraClassPath", jar)
        .config("spark.crail.config", small_cluster)
        .getOrCreate()
    )
    try:
        sc = spark.sparkContext
        # Values that do not compress (Spark's shuffle compression is on).
        data = sc.parallelize(range(200_000), 2).map(lambda x: (x, os.urandom(100)))
        with pytest.raises(Exception) as failed:
            data.reduceByKey(operator.add, 64).count()
        text = str(failed.value)
        assert "CrailException (StoreFull)" in text, text[-3000:]
        assert "store full: no room for" in text, text[-3000:]
        assert "NodeLost" not in text, text[-3000:]
    finally:
        spark.stop()
