// One run at a time per session: onnxruntime-web's WebGPU backend is not
// re-entrant (two run() calls in flight hang the page for good), so every
// session's calls go through its own FIFO queue.

export class RunQueue {
  private tail: Promise<unknown> = Promise.resolve();
  private inFlight = 0;
  /** Highest number of calls ever running at once: 1 unless the queue is broken. */
  maxInFlight = 0;
  /** Calls waiting or running now. */
  pending = 0;

  run<T>(task: () => Promise<T>): Promise<T> {
    this.pending++;
    const result = this.tail.then(async () => {
      this.inFlight++;
      this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
      try {
        return await task();
      } finally {
        this.inFlight--;
        this.pending--;
      }
    });
    // the next call waits for this one whether it succeeded or failed
    this.tail = result.catch(() => undefined);
    return result;
  }
}
