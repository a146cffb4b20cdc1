// The benchmark's serving modes, over any Engine (Node on wasm in bench.ts,
// the worker on WebGPU in webgpu.ts):
//   (a) sequential: one request at a time through one engine
//   (b) interleaved, batch size 1
//   (c) interleaved and batched
//   (d) naive: a separate set of sessions per request (the "deep copy")
import type { GenerateRequest } from '../workers/engine/api/types.ts';
import type { Engine } from '../workers/engine/engine.ts';

export type Mode = 'a' | 'b' | 'c' | 'd';
export const MODES: Mode[] = ['a', 'b', 'c', 'd'];
export const MODE_NAMES: Record<Mode, string> = { a: 'sequential', b: 'interleaved, batch 1', c: 'interleaved + batched', d: 'naive: sessions per request' };
export const STEPS = 4;
/** "A 4-step request that arrives behind 50-step ones." */
export const LONG_STEPS = 50;
export const MAX_BATCH = 16;

/** What every benchmark row has, whatever the backend. */
export interface ModeRow {
  size: number;
  n: number;
  mode: Mode;
  imagesPerSec: number;
  p50Ms: number;
  p95Ms: number;
  /** A 4-step request submitted behind n long ones: its completion time. */
  shortBehindLongMs: number;
  weightMb: number;
}

export const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
};

export const req = (i: number, size: number, steps = STEPS): GenerateRequest => ({ prompt: `benchmark prompt ${i % 5}`, seed: 1000 + i, steps, width: size, height: size });

/** Engine options for a mode: batch 1 for (b), batches of MAX_BATCH otherwise. */
export const modeOptions = (mode: Mode) => ({ maxBatch: mode === 'b' ? 1 : MAX_BATCH, maxActive: 64 });

/** Runs n requests in a mode (engines: one, or n for (d)); latencies, wall time, and the results. */
export async function runBatch(mode: Mode, engines: Engine[], reqs: GenerateRequest[]) {
  const latencies: number[] = [];
  const t0 = performance.now();
  const timed = async (e: Engine, r: GenerateRequest) => {
    const s = performance.now();
    const out = await e.generate(r);
    latencies.push(performance.now() - s);
    return out;
  };
  let results;
  if (mode === 'a') {
    // each request's latency counts from when all were submitted
    results = [];
    for (const r of reqs) {
      results.push(await engines[0].generate(r));
      latencies.push(performance.now() - t0);
    }
  } else if (mode === 'd') results = await Promise.all(reqs.map((r, i) => timed(engines[i], r)));
  else results = await Promise.all(reqs.map((r) => timed(engines[0], r)));
  return { latencies, wallMs: performance.now() - t0, results };
}

/** A short request submitted behind n long ones (engines: one, or n + 1 for (d)): its completion time. */
export async function shortBehindLong(mode: Mode, engines: Engine[], n: number, size: number, longSteps = LONG_STEPS): Promise<number> {
  const longs = Array.from({ length: n }, (_, i) => req(100 + i, size, longSteps));
  const short = req(999, size, STEPS);
  const t0 = performance.now();
  if (mode === 'a') {
    for (const r of longs) await engines[0].generate(r);
    await engines[0].generate(short);
    return performance.now() - t0;
  }
  const target = (i: number) => (mode === 'd' ? engines[i] : engines[0]);
  const pending = longs.map((r, i) => target(i).generate(r));
  await target(n).generate(short);
  const done = performance.now() - t0;
  await Promise.all(pending);
  return done;
}
