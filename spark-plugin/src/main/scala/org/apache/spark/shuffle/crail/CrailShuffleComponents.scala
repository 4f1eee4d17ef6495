package org.apache.spark.shuffle.crail

import java.util.{Collections, Map => JMap, Optional}

import io.crail.spark.{CrailEngine, CrailException, CrailNative, CrailShuffleDataIO, CrailShuffleManager}
import org.apache.spark.SparkConf
import org.apache.spark.shuffle.api.{ShuffleDriverComponents, ShuffleExecutorComponents, ShuffleMapOutputWriter, SingleSpillShuffleMapOutputWriter}

/** Whether crail's [[CrailShuffleDataIO]] is Spark's shuffle IO plugin in `conf`. */
private[spark] object CrailShuffleIO {
  val PluginKey = "spark.shuffle.sort.io.plugin.class"
  val ManagerKey = "spark.shuffle.manager"

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
      catch { case e: CrailException => log.warn(s"crail: cleaning up failed: ${e.getMessage}") }
    }
  }

  override def removeShuffle(shuffleId: Int, blocking: Boolean): Unit = {
    try CrailEngine.call(conf, CrailEngine.appOf(conf))(CrailNative.unregisterShuffle(_, shuffleId))
    catch {
      case e: CrailException =>
        log.warn(s"crail: shuffle $shuffleId could not be removed: ${e.getMessage}")
    }
  }

  override def supportsReliableStorage(): Boolean = true
}

/**
 * The executors' side of [[CrailShuffleDataIO]]: nothing, since crail's shuffle manager writes
 * map output itself. Spark's own sort shuffle, which would write through it, is refused.
 */
private[spark] class CrailShuffleExecutorComponents(conf: SparkConf)
    extends ShuffleExecutorComponents {
  override def initializeExecutor(
      appId: String,
      execId: String,
      extraConfigs: JMap[String, String]): Unit = CrailShuffleIO.requireManager(conf)

  override def createMapOutputWriter(
      shuffleId: Int,
      mapTaskId: Long,
      numPartitions: Int): ShuffleMapOutputWriter = refuse()

  override def createSingleFileMapOutputWriter(
      shuffleId: Int,
      mapId: Long): Optional[SingleSpillShuffleMapOutputWriter] = refuse()

  private def refuse(): Nothing = throw new UnsupportedOperationException(
    "crail's shuffle manager writes map output itself: no map output writer here")
}
