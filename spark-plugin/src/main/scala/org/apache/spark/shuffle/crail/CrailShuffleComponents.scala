package org.apache.spark.shuffle.crail

import java.util.{Collections, Map => JMap, Optional}
import java.util.concurrent.ConcurrentHashMap

import io.crail.spark.{CrailEngine, CrailException, CrailNative, CrailShuffleDataIO, CrailShuffleManager}
import org.apache.spark.SparkConf
import org.apache.spark.shuffle.api.{ShuffleDriverComponents, ShuffleExecutorComponents, ShuffleMapOutputWriter, SingleSpillShuffleMapOutputWriter}
import org.apache.spark.shuffle.sort.io.LocalDiskShuffleExecutorComponents

/** Whether crail's [[CrailShuffleDataIO]] is Spark's shuffle IO plugin in `conf`. */
private[spark] object CrailShuffleIO {
  val PluginKey = "spark.shuffle.sort.io.plugin.class"
  val ManagerKey = "spark.shuffle.manager"

  /** The shuffles of this JVM's application that fell back to Spark's sort shuffle (on the
   * driver): crail has nothing to remove for them. */
  val fellBack: java.util.Set[Int] = ConcurrentHashMap.newKeySet[Int]()

  /** Whether `e` says crail cannot be reached (rather than refused the request). */
  def unreachable(e: Throwable): Boolean = e match {
    case c: CrailException => c.kind == "ServiceError" || c.isNodeLost
    case _: IllegalStateException => Option(e.getMessage).exists(_.startsWith("crail: cannot"))
    case _ => false
  }

  def inUse(conf: SparkConf): Boolean =
    conf.getOption(PluginKey).map(_.trim).contains(classOf[CrailShuffleDataIO].getName)

  /** Fails with one line unless crail's shuffle manager is Spark's too. */
  def requireManager(conf: SparkConf): Unit = {
    val manager = conf.get(ManagerKey, "sort").trim
    if (manager != classOf[CrailShuffleManager].getName) {
      throw new IllegalArgumentException(
        s"$PluginKey=${classOf[CrailShuffleDataIO].getName} needs " +
          s"$ManagerKey=${classOf[CrailShuffleManager].getName}, not $manager")
    }
  }
}

/**
 * The driver's side of [[CrailShuffleDataIO]]: crail keeps the shuffle output whatever
 * executors come and go (reliable storage, so dynamic allocation releases idle executors), a
 * shuffle Spark's cleaner drops is unregistered, and at the application's end crail removes
 * whatever the application left.
 */
private[spark] class CrailShuffleDriverComponents(conf: SparkConf)
    extends ShuffleDriverComponents {
  private val log = org.slf4j.LoggerFactory.getLogger(classOf[CrailShuffleDriverComponents])

  CrailShuffleIO.requireManager(conf)

  /** Nothing to hand to executors: they read the same `spark.crail.*` keys. */
  override def initializeApplication(): JMap[String, String] = Collections.emptyMap()

  override def cleanupApplication(): Unit = {
    if (conf.contains("spark.app.id")) {
      try CrailEngine.call(conf, CrailEngine.appOf(conf))(CrailNative.endApplication(_))
      catch {
        case e @ (_: CrailException | _: IllegalStateException) =>
          log.warn(s"crail: cleaning up failed: ${e.getMessage}")
      }
    }
  }

  override def removeShuffle(shuffleId: Int, blocking: Boolean): Unit = {
    if (CrailShuffleIO.fellBack.remove(shuffleId)) return
    try CrailEngine.call(conf, CrailEngine.appOf(conf))(CrailNative.unregisterShuffle(_, shuffleId))
    catch {
      case e @ (_: CrailException | _: IllegalStateException) =>
        log.warn(s"crail: shuffle $shuffleId could not be removed: ${e.getMessage}")
    }
  }

  override def supportsReliableStorage(): Boolean = true
}

/**
 * The executors' side of [[CrailShuffleDataIO]]: crail's shuffle manager writes its map output
 * itself; these write the shuffles that fell back to Spark's sort shuffle
 * (`spark.crail.fallback`) to local disk, as Spark's default plugin does. Only under crail's
 * shuffle manager.
 */
private[spark] class CrailShuffleExecutorComponents(conf: SparkConf)
    extends ShuffleExecutorComponents {
  private val local = new LocalDiskShuffleExecutorComponents(conf)

  override def initializeExecutor(
      appId: String,
      execId: String,
      extraConfigs: JMap[String, String]): Unit = {
    CrailShuffleIO.requireManager(conf)
    local.initializeExecutor(appId, execId, extraConfigs)
  }

  override def createMapOutputWriter(
      shuffleId: Int,
      mapTaskId: Long,
      numPartitions: Int): ShuffleMapOutputWriter =
    local.createMapOutputWriter(shuffleId, mapTaskId, numPartitions)

  override def createSingleFileMapOutputWriter(
      shuffleId: Int,
      mapId: Long): Optional[SingleSpillShuffleMapOutputWriter] =
    local.createSingleFileMapOutputWriter(shuffleId, mapId)
}
