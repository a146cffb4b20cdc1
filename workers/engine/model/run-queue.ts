// One onnxruntime call at a time. onnxruntime-web's WebGPU backend is not
// re-entrant: two run() calls in flight on one session hang the page for good,
// and it refuses to create a session while another is being created ("another
// WebGPU EP inference session is being created"). So every create, run and
// release made through one onnxruntime module goes through that module's FIFO
// device queue (deviceQueue below); each session still counts its own calls.

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

const deviceQueues = new WeakMap<object, RunQueue>();

/** The queue shared by every session of one onnxruntime module (and its device). */
export function deviceQueue(ort: object): RunQueue {
  let q = deviceQueues.get(ort);
  if (!q) deviceQueues.set(ort, (q = new RunQueue()));
  return q;
}
