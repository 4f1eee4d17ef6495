package org.apache.spark.shuffle.crail

import io.crail.spark.{CrailConf, CrailEngine, CrailException, CrailNative}
import org.apache.spark.{ShuffleDependency, SparkConf, TaskContext}
import org.apache.spark.shuffle._
import org.apache.spark.shuffle.sort.SortShuffleManager

/** The handle of a shuffle through crail (one that fell back has Spark's own). */
private[spark] class CrailShuffleHandle[K, V, C](
    shuffleId: Int,
    dependency: ShuffleDependency[K, V, C])
  extends BaseShuffleHandle(shuffleId, dependency)

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

  /** Spark's own sort shuffle, for the shuffles that fall back to it (`spark.crail.fallback`):
   * their handles are its, and executors serve their blocks through its resolver. */
  private lazy val sort = new SortShuffleManager(conf)

  if (isDriver) {
    // Fail at start, with one line naming the setting or address, if crail is not there
    // (unless shuffles may fall back to Spark's own).
    try CrailNative.close(CrailEngine.connect(settings, "spark-start-check"))
    catch {
      case e: IllegalStateException if settings.fallback =>
        log.warn(s"${e.getMessage}: shuffles go through Spark's sort shuffle while it cannot " +
          s"be reached (${CrailConf.Fallback}=true)")
    }
  }

  /** Runs `work` with this JVM's engine, on another crail node if its own is gone. */
  private def withEngine[T](work: Long => T): T =
    CrailEngine.call(conf, CrailEngine.appOf(conf))(work)

  override def registerShuffle[K, V, C](
      shuffleId: Int,
      dependency: ShuffleDependency[K, V, C]): ShuffleHandle = {
    val maps = dependency.rdd.partitions.length
    val partitions = dependency.partitioner.numPartitions
    try {
      withEngine(CrailNative.registerShuffle(_, shuffleId, maps, partitions,
        settings.crailSerializer, settings.replication))
    } catch {
      case e: Exception if settings.fallback && CrailShuffleIO.unreachable(e) =>
        log.warn(s"crail: shuffle $shuffleId goes through Spark's sort shuffle: " +
          s"${e.getMessage}")
        CrailShuffleIO.fellBack.add(shuffleId)
        return sort.registerShuffle(shuffleId, dependency)
    }
    log.info(s"crail: shuffle $shuffleId registered ($maps maps, $partitions partitions, " +
      s"${settings.crailSerializer})")
    new CrailShuffleHandle(shuffleId, dependency)
  }

  override def getWriter[K, V](
      handle: ShuffleHandle,
      mapId: Long,
      context: TaskContext,
      metrics: ShuffleWriteMetricsReporter): ShuffleWriter[K, V] = handle match {
    case crail: CrailShuffleHandle[K @unchecked, V @unchecked, _] =>
      withEngine(new CrailShuffleWriter(_, crail, mapId, context, metrics, settings))
    case fellBack => sort.getWriter(fellBack, mapId, context, metrics)
  }

  override def getReader[K, C](
      handle: ShuffleHandle,
      startMapIndex: Int,
      endMapIndex: Int,
      startPartition: Int,
      endPartition: Int,
      context: TaskContext,
      metrics: ShuffleReadMetricsReporter): ShuffleReader[K, C] = {
    handle match {
      case crail: CrailShuffleHandle[K @unchecked, _, C @unchecked] =>
        // endMapIndex is Int.MaxValue for every map; the bridge bounds it by the shuffle's
        // maps.
        new CrailShuffleReader(crail, startMapIndex, endMapIndex, startPartition,
          endPartition, context, metrics, settings, withEngine)
      case fellBack => sort.getReader(fellBack, startMapIndex, endMapIndex, startPartition,
        endPartition, context, metrics)
    }
  }

  /** Crail's shuffle IO plugin, when set, removes shuffles and the application's output. */
  private val driverComponents = CrailShuffleIO.inUse(conf)

  override def unregisterShuffle(shuffleId: Int): Boolean = {
    sort.unregisterShuffle(shuffleId)
    if (CrailShuffleIO.fellBack.remove(shuffleId) || !isDriver || driverComponents) true
    else withEngine(CrailNative.unregisterShuffle(_, shuffleId))
  }

  /** Executors serve only the blocks of shuffles that fell back to Spark's: crail holds the
   * others, under locations no executor has. */
  override def shuffleBlockResolver: ShuffleBlockResolver = sort.shuffleBlockResolver

  override def stop(): Unit = {
    if (isDriver && !driverComponents && conf.contains("spark.app.id")) {
      try withEngine(CrailNative.endApplication(_))
      catch {
        case e @ (_: CrailException | _: IllegalStateException) =>
          log.warn(s"crail: cleaning up failed: ${e.getMessage}")
      }
    }
    CrailEngine.close()
    sort.stop()
  }
}
