// One onnxruntime call at a time. onnxruntime-web's WebGPU backend is not
// re-entrant: two run() calls in flight on one session hang the page for good,
// and it refuses to create a session while another is being created ("another
// WebGPU EP inference session is being created"). So every create, run and
// release made through one onnxruntime module goes through that module's FIFO
// device queue (deviceQueue below); each session still counts its own calls.

/** A call starting or ending on the device: what the host's liveness watch listens to. */
export interface CallEvent {
  phase: 'start' | 'end';
  /** What runs ("transformer", "create vae_decoder"…). */
  label: string;
  /** How long the last call with this label took (start), or this one took (end); null the first time. */
  ms: number | null;
}

export class RunQueue {
  private tail: Promise<unknown> = Promise.resolve();
  private inFlight = 0;
  /** Highest number of calls ever running at once: 1 unless the queue is broken. */
  maxInFlight = 0;
  /** Calls waiting or running now. */
  pending = 0;
  private readonly lastMs = new Map<string, number>();
  private readonly observers = new Set<(e: CallEvent) => void>();

  /** Hears every call's start and end (a worker's heartbeat: a long call is announced before it blocks). */
  observe(listener: (e: CallEvent) => void): () => void {
    this.observers.add(listener);
    return () => this.observers.delete(listener);
  }

  private tell(e: CallEvent): void {
    for (const o of this.observers) {
      try {
        o(e);
      } catch {
        /* a listener's failure is its own */
      }
    }
  }

  run<T>(task: () => Promise<T>, label = 'call'): Promise<T> {
    this.pending++;
    const result = this.tail.then(async () => {
      this.inFlight++;
      this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
      this.tell({ phase: 'start', label, ms: this.lastMs.get(label) ?? null });
      const started = performance.now();
      try {
        return await task();
      } finally {
        const ms = performance.now() - started;
        this.lastMs.set(label, ms);
        this.tell({ phase: 'end', label, ms });
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
