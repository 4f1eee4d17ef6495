package io.crail.spark;

/**
 * An error of crail, raised by the native bridge: its kind ({@code NotFound}, {@code
 * AlreadyExists}, {@code StoreFull}, {@code FetchFailed}, {@code InvalidArgument}, {@code
 * ServiceError} (the store), {@code NodeLost} (the engine's crail node), {@code Closed}, {@code
 * Internal}), a one-line message, and for {@code FetchFailed} the map tasks whose output was
 * lost.
 */
public final class CrailException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  private final String kind;
  private final int[] maps;

  public CrailException(String kind, String message, int[] maps) {
    super(message);
    this.kind = kind;
    this.maps = maps == null ? new int[0] : maps.clone();
  }

  /** What went wrong, by kind. */
  public String kind() {
    return kind;
  }

  /** For {@code FetchFailed}: the maps to run again. */
  public int[] lostMaps() {
    return maps.clone();
  }

  /** Whether the engine's crail node is gone (another node can serve). */
  public boolean isNodeLost() {
    return "NodeLost".equals(kind);
  }

  /** The class, the kind and the message: what Spark's task failure reasons show. */
  @Override
  public String toString() {
    return getClass().getName() + " (" + kind + "): " + getMessage();
  }

  /** Whether stored shuffle data could not be read (its maps must run again). */
  public boolean isFetchFailure() {
    return "FetchFailed".equals(kind);
  }
}
