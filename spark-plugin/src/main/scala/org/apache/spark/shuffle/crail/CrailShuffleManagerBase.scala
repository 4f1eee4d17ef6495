package org.apache.spark.shuffle.crail

import io.crail.spark.{CrailConf, CrailEngine, CrailException, CrailNative}
import org.apache.spark.{ShuffleDependency, SparkConf, TaskContext}
import org.apache.spark.network.buffer.ManagedBuffer
import org.apache.spark.network.shuffle.MergedBlockMeta
import org.apache.spark.shuffle._
import org.apache.spark.storage.{BlockId, ShuffleMergedBlockId}

/**
 * The shuffle manager's work (`io.crail.spark.CrailShuffleManager` is its public name: Spark's
 * shuffle interfaces are private to Spark's packages in Scala). Spark's shuffle through crail: map tasks write their output to the crail node of their
 * host, reduce tasks read it from there, whatever executor wrote it. Enable with
 * `spark.shuffle.manager=io.crail.spark.CrailShuffleManager` and name the crail client
 * configuration with `spark.crail.config` (or `CRAIL_CONF`); the other `spark.crail.*` keys
 * are in `CrailConf.Keys`.
 *
 * The driver registers each shuffle with crail (maps, partitions, record format) and
 * unregisters it; at the application's end it removes whatever the application left. Map
 * statuses carry each partition's true length (for AQE) and a location that names no executor,
 * so losing an executor loses no shuffle output. Output crail cannot read any more (a dead
 * node) fails the read with a FetchFailedException naming the map, so Spark runs it again.
 */
abstract class CrailShuffleManagerBase(conf: SparkConf, isDriver: Boolean)
    extends BlockingShuffleManager {

  private val log = org.slf4j.LoggerFactory.getLogger(classOf[CrailShuffleManagerBase])

  private val settings = CrailConf(conf)

  if (isDriver) {
    // Fail at start, with one line naming the setting or address, if crail is not there.
    CrailNative.close(CrailEngine.connect(settings, "spark-start-check"))

  }

  /** Runs `work` with this JVM's engine, on another crail node if its own is gone. */
  private def withEngine[T](work: Long => T): T =
    CrailEngine.call(conf, CrailEngine.appOf(conf))(work)

  override def registerShuffle[K, V, C](
      shuffleId: Int,
      dependency: ShuffleDependency[K, V, C]): ShuffleHandle = {
    val maps = dependency.rdd.partitions.length
    val partitions = dependency.partitioner.numPartitions
    withEngine(CrailNative.registerShuffle(_, shuffleId, maps, partitions,
      settings.crailSerializer))
    log.info(s"crail: shuffle $shuffleId registered ($maps maps, $partitions partitions, " +
      s"${settings.crailSerializer})")
    new BaseShuffleHandle(shuffleId, dependency)
  }

  override def getWriter[K, V](
      handle: ShuffleHandle,
      mapId: Long,
      context: TaskContext,
      metrics: ShuffleWriteMetricsReporter): ShuffleWriter[K, V] = {
    val base = handle.asInstanceOf[BaseShuffleHandle[K, V, _]]
    withEngine(new CrailShuffleWriter(_, base, mapId, context, metrics, settings))
  }

  override def getReader[K, C](
      handle: ShuffleHandle,
      startMapIndex: Int,
      endMapIndex: Int,
      startPartition: Int,
      endPartition: Int,
      context: TaskContext,
      metrics: ShuffleReadMetricsReporter): ShuffleReader[K, C] = {
    // endMapIndex is Int.MaxValue for every map; the bridge bounds it by the shuffle's maps.
    val base = handle.asInstanceOf[BaseShuffleHandle[K, _, C]]
    new CrailShuffleReader(base, startMapIndex, endMapIndex, startPartition, endPartition,
      context, metrics, settings, withEngine)
  }

  /** Crail's shuffle IO plugin, when set, removes shuffles and the application's output. */
  private val driverComponents = CrailShuffleIO.inUse(conf)

  override def unregisterShuffle(shuffleId: Int): Boolean = {
    if (isDriver && !driverComponents) withEngine(CrailNative.unregisterShuffle(_, shuffleId))
    else true
  }

  override val shuffleBlockResolver: ShuffleBlockResolver = new ShuffleBlockResolver {
    private def none = throw new UnsupportedOperationException(
      "crail holds the shuffle data: executors serve no shuffle blocks")
    override def getBlockData(blockId: BlockId, dirs: Option[Array[String]]): ManagedBuffer =
      none
    override def getMergedBlockData(
        blockId: ShuffleMergedBlockId,
        dirs: Option[Array[String]]): Seq[ManagedBuffer] = none
    override def getMergedBlockMeta(
        blockId: ShuffleMergedBlockId,
        dirs: Option[Array[String]]): MergedBlockMeta = none
    override def stop(): Unit = {}
  }

  override def stop(): Unit = {
    if (isDriver && !driverComponents && conf.contains("spark.app.id")) {
      try withEngine(CrailNative.endApplication(_))
      catch { case e: CrailException => log.warn(s"crail: cleaning up failed: ${e.getMessage}") }
    }
    CrailEngine.close()
  }
}
