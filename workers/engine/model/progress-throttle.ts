// Byte progress arrives once per network chunk (thousands a second on a fast
// link); each becomes a message to the page and a re-render. A person reads a
// progress bar about ten times a second, so that is all that is passed on.
import type { ByteProgress } from './model-files.ts';

/** Least time between two byte-progress updates that are passed on. */
export const PROGRESS_INTERVAL_MS = 100;

/** One clock shared by every file of a load, so files downloading together still make at most ~10 updates a second. */
export class ProgressThrottle {
  private last = -Infinity;
  /** Updates passed on and held back, for tests and benchmarks. */
  readonly counts = { sent: 0, held: 0 };

  constructor(
    readonly intervalMs = PROGRESS_INTERVAL_MS,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /**
   * A file's reporter that passes on its first update, the one that completes
   * it (loaded reaches a known total), and others at most once per interval.
   */
  wrap(report: ByteProgress): ByteProgress {
    let first = true;
    return (loaded, total) => {
      const t = this.now();
      if (first || (total > 0 && loaded >= total) || t - this.last >= this.intervalMs) {
        first = false;
        this.last = t;
        this.counts.sent++;
        report(loaded, total);
      } else this.counts.held++;
    };
  }
}
