// One onnxruntime-web session per model component, created once per loaded
// model and shared by every request; all its runs go through the device queue
// (see run-queue.ts), and it counts its own calls so tests can see them.
// Element types come from the model: a float32 feed goes in as float16 where
// the graph declares float16 (fp16 exports), and float16 outputs come back as
// float32, so the engine's own math is always float32. It counts the bytes
// its runs move between the host and the device: CPU tensors in, CPU tensors
// out (tensors already on the GPU cross nothing). The engine feeds and reads
// tensors under its own (Optimum's) names; a graph that calls them otherwise
// (TensorStack's `out_sample`) is given its roles, and names are mapped both ways.
import type * as ortTypes from 'onnxruntime-web';
import { fromHalf, toHalf } from './float16.ts';
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
  /** Bytes its runs took from host memory (CPU feeds) and gave back to it (CPU outputs). */
  readonly transfers = { uploadBytes: 0, downloadBytes: 0 };
  /** Outputs the session leaves on the GPU (onnxruntime's preferredOutputLocation 'gpu-buffer'). */
  gpuOutputs: readonly string[] = [];
  private inFlight = 0;

  /** Inputs the graph declares as float16. */
  private readonly halfInputs: Set<string>;
  /** The graph's own names by the engine's names, and the engine's names by the graph's outputs. */
  private readonly inputNameOf = new Map<string, string>();
  private readonly outputNameOf = new Map<string, string>();
  private readonly outputRoleOf = new Map<string, string>();

  constructor(
    readonly name: string,
    private readonly session: ortTypes.InferenceSession,
    private readonly ort: { Tensor: typeof ortTypes.Tensor },
    /** Bytes its weights hold: the graph and its external data (twice that for fp16 weights on native CPU, computed in fp32). */
    readonly weightBytes: number,
    /** Shared by every session of the same onnxruntime module. */
    readonly queue: RunQueue,
    /** An input or output is float16 (such a session takes and gives host tensors only). */
    readonly halfIO = false,
  ) {
    this.halfInputs = new Set(session.inputMetadata.filter((m) => m.isTensor && m.type === 'float16').map((m) => m.name));
  }

  /** The graph's names for the engine's roles (`{ out_hidden_states: 'out_sample' }`); unmapped names pass as they are. */
  setRoles(roles: { inputs: Record<string, string>; outputs: Record<string, string> }): void {
    for (const [role, name] of Object.entries(roles.inputs)) this.inputNameOf.set(role, name);
    for (const [role, name] of Object.entries(roles.outputs)) {
      this.outputNameOf.set(role, name);
      this.outputRoleOf.set(name, role);
    }
  }

  /** The graph's name of an output the engine calls `role`. */
  outputName(role: string): string {
    return this.outputNameOf.get(role) ?? role;
  }

  get inputNames(): readonly string[] {
    return this.session.inputNames;
  }

  get outputNames(): readonly string[] {
    return this.session.outputNames;
  }

  /** Element type of an input as the session declares it (e.g. int32 vs int64 input_ids). */
  inputType(name: string): ortTypes.Tensor.Type {
    const meta = this.session.inputMetadata.find((m) => m.name === (this.inputNameOf.get(name) ?? name));
    if (!meta || !meta.isTensor) throw new Error(`${this.name} has no tensor input ${name}`);
    return meta.type;
  }

  /** Element type of an output as the session declares it. */
  outputType(name: string): ortTypes.Tensor.Type {
    const meta = this.session.outputMetadata.find((m) => m.name === this.outputName(name));
    if (!meta || !meta.isTensor) throw new Error(`${this.name} has no tensor output ${name}`);
    return meta.type;
  }

  /** float32 feeds become float16 where the graph wants float16. */
  private typedFeeds(feeds: Feeds): Feeds {
    if (!this.halfInputs.size && !this.inputNameOf.size) return feeds;
    const out: Feeds = {};
    for (const [role, t] of Object.entries(feeds)) {
      const name = this.inputNameOf.get(role) ?? role;
      out[name] = this.halfInputs.has(name) && t.type === 'float32' ? new this.ort.Tensor('float16', toHalf(t.data as Float32Array), t.dims) : t;
    }
    return out;
  }

  /** Outputs under the engine's names. */
  private byRole(outputs: Feeds): Feeds {
    if (!this.outputRoleOf.size) return outputs;
    const out: Feeds = {};
    for (const [name, t] of Object.entries(outputs)) out[this.outputRoleOf.get(name) ?? name] = t;
    return out;
  }

  /** float16 outputs become float32 (the float16 tensors are released). */
  private float32Outputs(outputs: Feeds): Feeds {
    for (const [name, t] of Object.entries(outputs)) {
      if (t.type !== 'float16') continue;
      outputs[name] = new this.ort.Tensor('float32', fromHalf(t.data as ArrayLike<number>), t.dims);
      t.dispose();
    }
    return outputs;
  }

  /** Runs the session behind its queue; the caller owns (and must dispose) the outputs. */
  run(feeds: Feeds, outputNames?: readonly string[]): Promise<Feeds> {
    return this.queue.run(async () => {
      this.maxInFlight = Math.max(this.maxInFlight, ++this.inFlight);
      try {
        const typed = this.typedFeeds(feeds);
        for (const t of Object.values(typed)) if (t.location === 'cpu') this.transfers.uploadBytes += hostBytes(t);
        const out = outputNames ? await this.session.run(typed, outputNames.map((n) => this.outputName(n))) : await this.session.run(typed);
        for (const t of Object.values(out)) if (t.location === 'cpu') this.transfers.downloadBytes += hostBytes(t);
        this.runs++;
        this.rows += Object.values(feeds)[0]?.dims[0] ?? 0;
        return this.float32Outputs(this.byRole(out as Feeds));
      } finally {
        this.inFlight--;
      }
    }, this.name);
  }

  async release(): Promise<void> {
    await this.queue.run(() => this.session.release(), `release ${this.name}`);
  }
}

/** Bytes of a CPU tensor's data. */
function hostBytes(t: ortTypes.Tensor): number {
  const d = t.data as { byteLength?: number; length: number };
  return d.byteLength ?? d.length * 8; // string tensors have no byteLength; none cross here
}
