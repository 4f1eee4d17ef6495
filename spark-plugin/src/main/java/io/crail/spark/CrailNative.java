package io.crail.spark;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;

/**
 * The native bridge (the Rust crate crail-spark-jni, packed in this jar for linux x86_64).
 * Handles are numbers the bridge hands out; every method throws {@link CrailException} on
 * failure. Loaded on first use.
 */
public final class CrailNative {
  private CrailNative() {}

  private static final String RESOURCE = "/native/linux-x86_64/libcrail_spark_jni.so";
  private static volatile boolean loaded;

  /** Loads the bridge from the jar (once); a clear error where it cannot run. */
  public static synchronized void load() {
    if (loaded) {
      return;
    }
    String os = System.getProperty("os.name", "");
    String arch = System.getProperty("os.arch", "");
    if (!os.toLowerCase().startsWith("linux") || !(arch.equals("amd64") || arch.equals("x86_64"))) {
      throw new CrailException(
          "Internal", "crail's Spark plugin carries a native library for linux x86_64 only, not "
              + os + " " + arch, null);
    }
    try (InputStream in = CrailNative.class.getResourceAsStream(RESOURCE)) {
      if (in == null) {
        throw new CrailException(
            "Internal", "the crail-spark jar lacks its native library " + RESOURCE
                + " (build it with mvn package)", null);
      }
      Path file = Files.createTempFile("libcrail_spark_jni", ".so");
      file.toFile().deleteOnExit();
      Files.copy(in, file, StandardCopyOption.REPLACE_EXISTING);
      System.load(file.toAbsolutePath().toString());
    } catch (IOException e) {
      throw new CrailException("Internal", "cannot unpack crail's native library: " + e, null);
    }
    loaded = true;
  }

  /**
   * Connects application {@code app}: to the crail node at {@code host} if not null; else to
   * the configuration's local_host; else to the node on {@code ownAddress} if one runs there;
   * else to a node picked by {@code seed}, trying the next if it does not answer; the hosts in
   * {@code avoid} (separated by commas; null for none) last. {@code config} null: CRAIL_CONF,
   * else /etc/crail/client.toml if it exists, else the defaults. {@code settings}: store keys
   * given as Spark keys ({@code spark.crail.namenode=...}, one a line; null for none), over
   * the file's values.
   */
  public static native long connect(String config, String settings, String app, String host,
      String ownAddress, long seed, String avoid);

  public static native String host(long engine);

  public static native void close(long engine);

  /** Registers a shuffle whose group files have {@code replication} copies (1: none). */
  public static native void registerShuffle(long engine, int shuffle, int maps, int partitions,
      String serializer, int replication);

  public static native boolean unregisterShuffle(long engine, int shuffle);

  public static native void endApplication(long engine);

  /**
   * A map task's output: attempt {@code attempt} of map {@code map} in generation {@code
   * generation} (the stage attempt: a rerun of the stage replaces the earlier run's output, map
   * by map, and a late task of the earlier run cannot commit over it).
   */
  public static native long openWriter(long engine, int shuffle, int map, long attempt,
      int generation);

  /** Appends whole records already encoded by the shuffle's serializer. */
  public static native void write(long writer, int partition, byte[] data, int off, int len);

  /** Appends one record with an empty key and these bytes as its value. */
  public static native void writeRecord(long writer, int partition, byte[] data, int off, int len);

  /**
   * Commits the map output with Spark's checksum of it (0 for none); returns the output that
   * stands for the map, {@code [attempt, checksum, bytes of partition 0, 1, ...]}: this
   * attempt's, or that of another attempt of the same generation that committed first.
   */
  public static native long[] commit(long writer, long checksum);

  public static native void abort(long writer);

  /**
   * Partitions [startPartition, endPartition) of maps [startMap, endMap), or when {@code
   * attempts} is not null of exactly the maps it names, {@code [map, attempt, ...]} (a map
   * committed by another attempt fails as a fetch failure); sorter null: as the records come;
   * {@code prefetch} group files fetched at once.
   */
  public static native long openReader(long engine, int shuffle, int startPartition,
      int endPartition, int startMap, int endMap, long[] attempts, String sorter, int prefetch);

  /** The next record's value, null at the end. */
  public static native byte[] nextValue(long reader);

  /** Fills dst with whole fixed-length records; the bytes filled, 0 at the end. */
  public static native int nextRecords(long reader, byte[] dst);

  public static native void closeReader(long reader);

  public static native long putBroadcast(long engine, String id, byte[] value);

  public static native byte[] getBroadcast(long engine, String id);

  public static native long broadcastFetches(long engine, String id);

  public static native void destroyBroadcast(long engine, String id);
}
