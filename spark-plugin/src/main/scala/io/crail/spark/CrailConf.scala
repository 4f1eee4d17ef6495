package io.crail.spark

import scala.util.Try

import org.apache.spark.SparkConf

/** The plugin's settings, from the `spark.crail.*` keys (see [[CrailConf.Keys]]). */
final case class CrailConf(
    config: Option[String],
    host: Option[String],
    serializer: String,
    sorter: String,
    bufferSize: Int,
    store: Seq[(String, String)] = Nil,
    fallback: Boolean = false,
    replication: Int = 1,
    prefetch: Int = 4) {

  /** The store settings given as Spark keys, one `key=value` a line, for the native side. */
  def storeSettings: String =
    if (store.isEmpty) null else store.map { case (k, v) => s"$k=$v" }.mkString("\n")

  /** Key and value lengths of the fixed-length serializer, if chosen. */
  def fixed: Option[(Int, Int)] = CrailConf.fixedLens(serializer)

  /** The serializer the crail shuffle is registered with. */
  def crailSerializer: String = if (fixed.isDefined) serializer else "kv"

  /** The crail sorter a reduce reads with, if crail sorts. */
  def crailSorter: Option[String] = if (sorter == "spark") None else Some(sorter)
}

object CrailConf {
  val Config = "spark.crail.config"
  val Host = "spark.crail.host"
  val Serializer = "spark.crail.shuffle.serializer"
  val Sorter = "spark.crail.shuffle.sorter"
  val BufferSize = "spark.crail.shuffle.bufferSize"
  val Replication = "spark.crail.shuffle.replication"
  val Prefetch = "spark.crail.shuffle.prefetch"
  val Namenode = "spark.crail.namenode"
  val Secret = "spark.crail.secret"
  val Fallback = "spark.crail.fallback"
  /** Spark's own key: its shuffle blocks (and crail's frames of them) are encrypted. */
  val IoEncryption = "spark.io.encryption.enabled"
  /** Prefixes of keys that set the store client's configuration: `[client]`, `[security]`. */
  val StorePrefixes = Seq("spark.crail.client.", "spark.crail.security.")

  /** Every key, its default and what it means (docs/spark.md is written from this). */
  val Keys: Seq[(String, String, String)] = Seq(
    (Config, "$CRAIL_CONF, else /etc/crail/client.toml if it exists, else the built-in defaults",
      "the crail client configuration file (what `crail cluster --config-out` writes)"),
    (Host, "the config's local_host, else this host's crail node, else one picked per executor",
      "the address of the crail node this JVM uses"),
    (Serializer, "spark",
      "`spark`: records go through the job's Spark serializer, in frames compressed and " +
        "encrypted as Spark's shuffle blocks (spark.shuffle.compress, " +
        "spark.io.compression.codec, spark.io.encryption.enabled); `fixed:K:V`: records are " +
        "(byte[K], byte[V]) pairs stored as K+V bytes, nothing else (TeraSort; not " +
        "compressed, and refused with encryption)"),
    (Sorter, "spark",
      "`spark`: Spark sorts reduce input where the job asks (ExternalSorter); `radix`, " +
        "`radsort`, `comparison`: crail sorts fixed-length records by their key bytes " +
        "(unsigned), needs serializer fixed:K:V"),
    (BufferSize, "64k",
      "bytes a map task gathers per partition before sending them to crail"),
    (Replication, "1",
      "copies of every map output, each on another crail node (1 to 3): with 2, a dead node " +
        "loses no output and no map runs again"),
    (Prefetch, "4", "group files a reduce task reads at once (1 to 64)"),
    (Namenode, "the config's client.namenode",
      "the namenode's address, host:port: with it (and the secret if the cluster has one) " +
        "no configuration file is needed on any host"),
    (Secret, "the config's security.secret",
      "the cluster's shared secret (Spark redacts it in its UI and logs, as every key " +
        "naming a secret)"),
    (Fallback, "false",
      "`true`: a shuffle registered while crail cannot be reached (and every shuffle, if it " +
        "cannot be reached at start) goes through Spark's own sort shuffle, with one warning " +
        "line; `false`: the application fails at start, a shuffle at registration"),
    ("spark.crail.client.<key>, spark.crail.security.<key>", "the config's",
      "any key of the client configuration's [client] or [security] section " +
        "(docs/config.md), e.g. spark.crail.client.rpc_timeout=10s; over the file's value"))

  private val Sorters = Set("spark", "radix", "radsort", "comparison")

  private def fixedLens(s: String): Option[(Int, Int)] = s.split(":") match {
    case Array("fixed", k, v) =>
      for { key <- Try(k.toInt).toOption; value <- Try(v.toInt).toOption
            if key > 0 && value >= 0 } yield (key, value)
    case _ => None
  }

  /** The settings of `conf`; a bad value is an IllegalArgumentException naming its key. */
  def apply(conf: SparkConf): CrailConf = {
    def bad(key: String, why: String) =
      throw new IllegalArgumentException(s"$key=${conf.get(key, "")}: $why")
    val serializer = conf.get(Serializer, "spark").trim
    if (serializer != "spark" && fixedLens(serializer).isEmpty) {
      bad(Serializer, "expected spark or fixed:KEY:VALUE (byte lengths, KEY at least 1)")
    }
    // Fixed-length records are stored as their bytes (crail sorts them by their keys), so
    // they cannot be encrypted; Spark-serialized frames are, as Spark's own blocks.
    if (fixedLens(serializer).isDefined && conf.getBoolean(IoEncryption, false)) {
      bad(Serializer, s"fixed-length records are stored as their bytes and cannot be " +
        s"encrypted: with $IoEncryption=true use $Serializer=spark")
    }
    val sorter = conf.get(Sorter, "spark").trim
    if (!Sorters(sorter)) bad(Sorter, s"expected one of ${Sorters.toSeq.sorted.mkString(", ")}")
    if (sorter != "spark" && serializer == "spark") {
      bad(Sorter, s"crail sorts fixed-length records only: set $Serializer=fixed:KEY:VALUE")
    }
    val bufferSize = Try(conf.getSizeAsBytes(BufferSize, "64k")).getOrElse(
      bad(BufferSize, "expected a size such as 64k or 1m"))
    if (bufferSize < 1024 || bufferSize > (64L << 20)) bad(BufferSize, "expected 1k to 64m")
    val host = conf.getOption(Host).map(_.trim).filter(_.nonEmpty)
    host.foreach { h =>
      if (!h.matches("""[0-9.]+|[0-9a-fA-F:]+""")) bad(Host, "expected an IP address")
    }
    val store = conf.getAll.toSeq.filter { case (k, _) =>
      k == Namenode || k == Secret || StorePrefixes.exists(p => k.startsWith(p) && k.length > p.length)
    }.sortBy(_._1)
    store.foreach { case (k, v) =>
      if (v.contains('\n')) bad(k, "expected one line")
    }
    val fallback = Try(conf.getBoolean(Fallback, false)).getOrElse(
      bad(Fallback, "expected true or false"))
    def count(key: String, default: Int, max: Int): Int =
      Try(conf.getInt(key, default)).toOption.filter(n => n >= 1 && n <= max).getOrElse(
        bad(key, s"expected a number from 1 to $max"))
    CrailConf(conf.getOption(Config).map(_.trim).filter(_.nonEmpty), host, serializer, sorter,
      bufferSize.toInt, store, fallback, count(Replication, 1, 3), count(Prefetch, 4, 64))
  }
}
