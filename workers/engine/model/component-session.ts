// One onnxruntime-web session per model component, created once per loaded
// model and shared by every request; all its runs go through the device queue
// (see run-queue.ts), and it counts its own calls so tests can see them.
import type * as ortTypes from 'onnxruntime-web';
import { RunQueue } from './run-queue.ts';

export type Ort = typeof ortTypes;
export type Tensor = ortTypes.Tensor;
export type Feeds = Record<string, ortTypes.Tensor>;

export class ComponentSession {
  /** Number of completed runs and of batch rows they carried (guidance tests count these). */
  runs = 0;
  rows = 0;
  /** Highest number of this session's runs ever in flight at once: 1 unless the queue is broken. */
  maxInFlight = 0;
  private inFlight = 0;

  constructor(
    readonly name: string,
    private readonly session: ortTypes.InferenceSession,
    /** Bytes of the graph and its external data. */
    readonly weightBytes: number,
    /** Shared by every session of the same onnxruntime module. */
    readonly queue: RunQueue,
  ) {}

  get inputNames(): readonly string[] {
    return this.session.inputNames;
  }

  get outputNames(): readonly string[] {
    return this.session.outputNames;
  }

  /** Element type of an input as the session declares it (e.g. int32 vs int64 input_ids). */
  inputType(name: string): ortTypes.Tensor.Type {
    const meta = this.session.inputMetadata.find((m) => m.name === name);
    if (!meta || !meta.isTensor) throw new Error(`${this.name} has no tensor input ${name}`);
    return meta.type;
  }

  /** Runs the session behind its queue; the caller owns (and must dispose) the outputs. */
  run(feeds: Feeds, outputNames?: readonly string[]): Promise<Feeds> {
    return this.queue.run(async () => {
      this.maxInFlight = Math.max(this.maxInFlight, ++this.inFlight);
      try {
        const out = outputNames ? await this.session.run(feeds, outputNames) : await this.session.run(feeds);
        this.runs++;
        this.rows += Object.values(feeds)[0]?.dims[0] ?? 0;
        return out as Feeds;
      } finally {
        this.inFlight--;
      }
    });
  }

  async release(): Promise<void> {
    await this.queue.run(() => this.session.release());
  }
}
