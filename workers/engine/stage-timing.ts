// Time per stage of the engine: text encoders, transformer runs, guidance with
// the Euler step, VAE decode and read-backs. Every stage gets its wall-clock
// time (performance.now around the awaited call, which on the device path
// waits until the GPU has finished the work); stages made of the engine's own
// compute passes also get GPU time from timestamp queries where the device has
// `timestamp-query` (GpuPassTimer). onnxruntime's runs are timed as a whole by
// the wall clock only. The transformer's runs also add up their FLOPs
// (flops.ts), for the achieved FLOP/s and, on a known adapter, its fraction of
// the adapter's peak.
import type { StageName, StageTiming, StageTimings } from './api/types.ts';
import { APP_BUFFER_LABEL } from './app-buffers.ts';
import { adapterPeakFlops } from './flops.ts';

interface Sum {
  runs: number;
  totalMs: number;
  lastMs: number;
}

const add = (s: Sum | undefined, ms: number): Sum => ({ runs: (s?.runs ?? 0) + 1, totalMs: (s?.totalMs ?? 0) + ms, lastMs: ms });

export class StageTimer {
  private readonly wall = new Map<StageName, Sum>();
  private readonly gpu = new Map<StageName, Sum>();
  private transformer = { rows: 0, flops: 0, wallMs: 0, flopsPerRowStep: 0, lastSize: '' };
  /** Set once a device with timestamp-query records GPU time. */
  gpuTimestamps = false;

  /** A stage's wall-clock time, ms. */
  recordWall(stage: StageName, ms: number): void {
    this.wall.set(stage, add(this.wall.get(stage), ms));
  }

  /** A stage's GPU time, ms, from timestamp queries. */
  recordGpu(stage: StageName, ms: number): void {
    this.gpuTimestamps = true;
    this.gpu.set(stage, add(this.gpu.get(stage), ms));
  }

  /** One transformer run: its wall time, rows and FLOPs (rows × FLOPs of one row at its size). */
  recordTransformer(ms: number, rows: number, flopsPerRow: number, size: string): void {
    this.recordWall('transformer', ms);
    const t = this.transformer;
    t.rows += rows;
    t.flops += rows * flopsPerRow;
    t.wallMs += ms;
    t.flopsPerRowStep = flopsPerRow;
    t.lastSize = size;
  }

  /** Times a promise's settling on the wall clock; a stage that fails is not counted. */
  async wallTime<T>(stage: StageName, run: () => Promise<T>): Promise<T> {
    const start = performance.now();
    const out = await run();
    this.recordWall(stage, performance.now() - start);
    return out;
  }

  /** Means per stage, for status(); the transformer's FLOP rate against the adapter's peak where the table knows it. */
  snapshot(adapter?: string | null, precision: 'fp32' | 'fp16' = 'fp32'): StageTimings | null {
    if (!this.wall.size && !this.gpu.size) return null;
    const stages: Partial<Record<StageName, StageTiming>> = {};
    for (const [stage, w] of this.wall) {
      const g = this.gpu.get(stage);
      stages[stage] = {
        runs: w.runs,
        wallTotalMs: w.totalMs,
        wallMeanMs: w.totalMs / w.runs,
        wallLastMs: w.lastMs,
        ...(g ? { gpu: { runs: g.runs, totalMs: g.totalMs, meanMs: g.totalMs / g.runs, lastMs: g.lastMs } } : {}),
      };
    }
    const t = this.transformer;
    let transformer: StageTimings['transformer'];
    if (t.rows && t.wallMs > 0) {
      const achieved = t.flops / (t.wallMs / 1000);
      const peak = adapterPeakFlops(adapter, precision);
      transformer = {
        rows: t.rows,
        flops: t.flops,
        flopsPerRowStep: t.flopsPerRowStep,
        lastSize: t.lastSize,
        achievedFlopsPerSecond: achieved,
        ...(peak ? { peak: { adapter: peak.name, flopsPerSecond: peak.flopsPerSecond, fraction: achieved / peak.flopsPerSecond } } : {}),
      };
    }
    return { gpuTimestamps: this.gpuTimestamps, stages, ...(transformer ? { transformer } : {}) };
  }
}

/**
 * What happened between two snapshots (the benchmark times its measured
 * requests, not the warm-up): runs and totals subtracted, means recomputed.
 * Last values and the transformer's peak fraction are those of `after`.
 */
export function stageDelta(after: StageTimings | null | undefined, before: StageTimings | null | undefined): StageTimings | null {
  if (!after) return null;
  const stages: Partial<Record<StageName, StageTiming>> = {};
  for (const [name, a] of Object.entries(after.stages) as [StageName, StageTiming][]) {
    const b = before?.stages[name];
    const runs = a.runs - (b?.runs ?? 0);
    if (runs <= 0) continue;
    const wallTotalMs = a.wallTotalMs - (b?.wallTotalMs ?? 0);
    const gRuns = (a.gpu?.runs ?? 0) - (b?.gpu?.runs ?? 0);
    const gTotal = (a.gpu?.totalMs ?? 0) - (b?.gpu?.totalMs ?? 0);
    stages[name] = { runs, wallTotalMs, wallMeanMs: wallTotalMs / runs, wallLastMs: a.wallLastMs, ...(a.gpu && gRuns > 0 ? { gpu: { runs: gRuns, totalMs: gTotal, meanMs: gTotal / gRuns, lastMs: a.gpu.lastMs } } : {}) };
  }
  let transformer = after.transformer;
  if (transformer && before?.transformer) {
    const flops = transformer.flops - before.transformer.flops;
    const wallMs = (stages.transformer?.wallTotalMs ?? 0);
    const achieved = wallMs > 0 ? flops / (wallMs / 1000) : 0;
    transformer = {
      ...transformer,
      rows: transformer.rows - before.transformer.rows,
      flops,
      achievedFlopsPerSecond: achieved,
      ...(transformer.peak ? { peak: { ...transformer.peak, fraction: achieved / transformer.peak.flopsPerSecond } } : {}),
    };
  }
  return { gpuTimestamps: after.gpuTimestamps, stages, ...(transformer ? { transformer } : {}) };
}

/** Merges several engines' timings (the naive mode's one engine per request) by adding runs and totals. */
export function mergeStages(all: readonly (StageTimings | null | undefined)[]): StageTimings | null {
  const present = all.filter((x): x is StageTimings => !!x);
  if (!present.length) return null;
  const stages: Partial<Record<StageName, StageTiming>> = {};
  for (const t of present) {
    for (const [name, s] of Object.entries(t.stages) as [StageName, StageTiming][]) {
      const a = stages[name];
      const runs = (a?.runs ?? 0) + s.runs;
      const wallTotalMs = (a?.wallTotalMs ?? 0) + s.wallTotalMs;
      const g = a?.gpu && s.gpu ? { runs: a.gpu.runs + s.gpu.runs, totalMs: a.gpu.totalMs + s.gpu.totalMs, lastMs: s.gpu.lastMs } : (s.gpu ?? a?.gpu);
      stages[name] = { runs, wallTotalMs, wallMeanMs: wallTotalMs / runs, wallLastMs: s.wallLastMs, ...(g ? { gpu: { ...g, meanMs: g.totalMs / g.runs } } : {}) };
    }
  }
  const ts = present.map((t) => t.transformer).filter((t) => t !== undefined);
  let transformer: StageTimings['transformer'];
  if (ts.length) {
    const last = ts[ts.length - 1];
    const flops = ts.reduce((n, t) => n + t.flops, 0);
    const wallMs = stages.transformer?.wallTotalMs ?? 0;
    const achieved = wallMs > 0 ? flops / (wallMs / 1000) : 0;
    transformer = { ...last, rows: ts.reduce((n, t) => n + t.rows, 0), flops, achievedFlopsPerSecond: achieved, ...(last.peak ? { peak: { ...last.peak, fraction: achieved / last.peak.flopsPerSecond } } : {}) };
  }
  return { gpuTimestamps: present.some((t) => t.gpuTimestamps), stages, ...(transformer ? { transformer } : {}) };
}

// GPUBufferUsage by value: the engine core runs where the globals are absent (Node)
const QUERY_RESOLVE = 0x0200;
const COPY_SRC = 0x0004;

/**
 * GPU time of one compute pass from two timestamps (the pass's beginning and
 * end), on a device with `timestamp-query`. The caller puts `timestampWrites`
 * on its pass, then `resolve(encoder, readBuffer, offset)` copies the two
 * 64-bit values into its own mapped read-back (no extra map), and `ms(words)`
 * turns them into milliseconds (null when the browser gave nothing usable).
 * Browsers may quantize timestamps (Chrome: to 100 µs unless developer
 * features are on), so a short pass can read as 0.
 */
export class GpuPassTimer {
  private readonly querySet: GPUQuerySet;
  private readonly resolveBuffer: GPUBuffer;

  static forDevice(device: GPUDevice): GpuPassTimer | null {
    return device.features.has('timestamp-query') ? new GpuPassTimer(device) : null;
  }

  private constructor(device: GPUDevice) {
    this.querySet = device.createQuerySet({ type: 'timestamp', count: 2 });
    this.resolveBuffer = device.createBuffer({ label: `${APP_BUFFER_LABEL} pass timer`, size: 16, usage: QUERY_RESOLVE | COPY_SRC });
  }

  get timestampWrites(): GPUComputePassTimestampWrites {
    return { querySet: this.querySet, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 };
  }

  /** Resolves the pass's two timestamps and copies them (16 bytes) into `into` at `offset` (a multiple of 8). */
  resolve(encoder: GPUCommandEncoder, into: GPUBuffer, offset: number): void {
    encoder.resolveQuerySet(this.querySet, 0, 2, this.resolveBuffer, 0);
    encoder.copyBufferToBuffer(this.resolveBuffer, 0, into, offset, 16);
  }

  /** Milliseconds between the two timestamps read back (nanoseconds), or null when they are unusable. */
  static ms(stamps: BigUint64Array): number | null {
    const [begin, end] = stamps;
    if (!begin || end < begin) return null;
    return Number(end - begin) / 1e6;
  }

  destroy(): void {
    this.querySet.destroy();
    this.resolveBuffer.destroy();
  }
}
