package io.crail.spark;

import org.apache.spark.SparkConf;
import org.apache.spark.shuffle.crail.CrailShuffleManagerBase;

/**
 * Spark's shuffle through crail. Enable with
 * {@code spark.shuffle.manager=io.crail.spark.CrailShuffleManager} and name the crail client
 * configuration with {@code spark.crail.config} (or {@code CRAIL_CONF}); docs/spark.md lists every
 * {@code spark.crail.*} key. The work is in {@link CrailShuffleManagerBase}.
 */
public final class CrailShuffleManager extends CrailShuffleManagerBase {
  public CrailShuffleManager(SparkConf conf, boolean isDriver) {
    super(conf, isDriver);
  }

  public CrailShuffleManager(SparkConf conf) {
    this(conf, true);
  }
}
