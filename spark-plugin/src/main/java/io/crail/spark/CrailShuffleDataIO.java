package io.crail.spark;

import org.apache.spark.SparkConf;
import org.apache.spark.shuffle.api.ShuffleDataIO;
import org.apache.spark.shuffle.api.ShuffleDriverComponents;
import org.apache.spark.shuffle.api.ShuffleExecutorComponents;
import org.apache.spark.shuffle.crail.CrailShuffleDriverComponents;
import org.apache.spark.shuffle.crail.CrailShuffleExecutorComponents;

/**
 * Tells Spark that crail holds the shuffle output, so executors can come and go: with
 * {@code spark.shuffle.sort.io.plugin.class=io.crail.spark.CrailShuffleDataIO} beside
 * {@code spark.shuffle.manager=io.crail.spark.CrailShuffleManager}, dynamic allocation runs
 * without an external shuffle service or shuffle tracking. The driver components also remove
 * shuffles and the application's output at its end. Only with crail's shuffle manager.
 */
public final class CrailShuffleDataIO implements ShuffleDataIO {
  private final SparkConf conf;

  public CrailShuffleDataIO(SparkConf conf) {
    this.conf = conf;
  }

  @Override
  public ShuffleDriverComponents driver() {
    return new CrailShuffleDriverComponents(conf);
  }

  @Override
  public ShuffleExecutorComponents executor() {
    return new CrailShuffleExecutorComponents(conf);
  }
}
