package io.crail.spark

import java.net.InetAddress

import org.apache.spark.{SparkConf, SparkEnv}

/**
 * This JVM's connection to crail on behalf of the Spark application: one native engine,
 * made at first use and shared by the shuffle manager and [[CrailBroadcast]].
 */
object CrailEngine {
  @volatile private var engine: Long = 0L
  @volatile private var engineApp: String = null
  /** Nodes whose services this JVM lost, tried last when it connects again. */
  @volatile private var lost: Set[String] = Set.empty

  /** The engine for application `app` (connecting on first use). */
  def get(conf: SparkConf, app: String): Long = synchronized {
    if (engine == 0L || engineApp != app) {
      close()
      engine = connect(CrailConf(conf), app, lost)
      engineApp = app
    }
    engine
  }

  /**
   * Runs `work` with the engine; if the engine's crail node is gone (and `spark.crail.host`
   * does not pin it), connects to another node and runs `work` once more there.
   */
  def call[T](conf: SparkConf, app: String)(work: Long => T): T = {
    val first = get(conf, app)
    try work(first)
    catch {
      case e: CrailException if e.isNodeLost && CrailConf(conf).host.isEmpty =>
        synchronized {
          if (engine == first) {
            lost += CrailNative.host(first)
            close()
          }
        }
        work(get(conf, app))
    }
  }

  /** [[call]] for the application of SparkEnv's configuration. */
  def call[T](work: Long => T): T = {
    val conf = env().conf
    call(conf, appOf(conf))(work)
  }

  private def env(): SparkEnv = {
    val env = SparkEnv.get
    if (env == null) {
      throw new IllegalStateException("crail: no SparkEnv here (not in a Spark driver or executor)")
    }
    env
  }

  def appOf(conf: SparkConf): String = {
    val id = conf.getOption("spark.app.id").getOrElse(
      throw new IllegalStateException("crail: spark.app.id is not set yet"))
    // Crail application names are letters, digits, '.', '_', '-'.
    id.replaceAll("[^A-Za-z0-9._-]", "_")
  }

  /** Connects as `app`, or fails with one line naming the setting or address at fault. */
  def connect(conf: CrailConf, app: String, avoid: Set[String] = Set.empty): Long = {
    CrailNative.load()
    val own = scala.util.Try(InetAddress.getLocalHost.getHostAddress).toOption.orNull
    val seed = Option(SparkEnv.get).map(_.executorId.hashCode.toLong & 0xffffffffL).getOrElse(0L)
    try {
      CrailNative.connect(conf.config.orNull, conf.storeSettings, app, conf.host.orNull, own,
        seed,
        if (avoid.isEmpty) null else avoid.mkString(","))
    } catch {
      case e: CrailException =>
        val where = conf.config.map(f => s"${CrailConf.Config}=$f").getOrElse(
          sys.env.get("CRAIL_CONF").map(f => s"CRAIL_CONF=$f").getOrElse("the default config"))
        throw new IllegalStateException(
          s"crail: cannot connect ($where${conf.host.map(h => s", ${CrailConf.Host}=$h")
            .getOrElse("")}): ${e.getMessage}", e)
    }
  }

  /** The crail node the engine is on. */
  def host(engine: Long): String = CrailNative.host(engine)

  def close(): Unit = synchronized {
    if (engine != 0L) {
      CrailNative.close(engine)
      engine = 0L
      engineApp = null
    }
  }
}
