// The worker's API with fault injection, for the browser tests only: the
// production worker (engine.worker.ts) has no way to crash itself or destroy
// its device. Reached through test.html, which `npm run build` never builds.
import { createBrowserEngine, gpuDevice, loseGpuDevice } from './browser-engine.ts';
import { modeOptions, req, runBatch, shortBehindLong, STEPS, type Mode } from '../bench/modes.ts';
import type { ImageMetadata } from './engine/api/types.ts';
import type { NormalizedRequest } from './engine/api/validate.ts';
import type { Engine } from './engine/engine.ts';
import { WorkerApi } from './worker-api.ts';
import { mergeStages, stageDelta } from './engine/stage-timing.ts';

export class TestWorkerApi extends WorkerApi {
  /** Destroys the GPU device, as a driver reset would. */
  async simulateDeviceLoss(): Promise<boolean> {
    return loseGpuDevice();
  }

  /**
   * The `run`-th transformer run from now (1 = the next) gives NaN in its first
   * row, on the GPU where the output stays there: the request of that row must
   * fail alone, and its tensors be freed.
   */
  async poisonTransformerRun(run: number): Promise<void> {
    const session = this.engine?.model?.transformer;
    if (!session) throw new Error('no model loaded');
    const original = session.run.bind(session);
    let seen = 0;
    session.run = async (feeds, names) => {
      const out = await original(feeds, names);
      if (++seen === run) {
        session.run = original;
        const t = out.out_hidden_states;
        const rowLength = t.dims.slice(1).reduce((a, b) => a * b, 1);
        const nan = new Float32Array(rowLength).fill(NaN);
        if (t.location === 'gpu-buffer') gpuDevice()!.queue.writeBuffer(t.gpuBuffer as GPUBuffer, 0, nan);
        else (t.data as Float32Array).set(nan);
      }
      return out;
    };
  }

  /**
   * The loaded model's transformer runs `runs` more times, then every further run
   * never answers: its requests stay mid-denoising, so a test that reloads the page
   * knows none of them finished in this worker (a reload keeps the old page, and its
   * worker, alive until the new page arrives, which under load takes seconds).
   */
  async holdTransformerAfter(runs: number): Promise<void> {
    const session = this.engine?.model?.transformer;
    if (!session) throw new Error('no model loaded');
    const original = session.run.bind(session);
    let seen = 0;
    session.run = async (feeds, names) => (++seen > runs ? new Promise<never>(() => undefined) : original(feeds, names));
  }

  /**
   * One benchmark cell on WebGPU (npm run bench -- --webgpu): fresh engines
   * on this worker's device for a serving mode, the tiny model loaded on the
   * host or the device path, n requests, then a short one behind n long ones.
   */
  async benchMode(o: { modelUrl: string; mode: Mode; n: number; size: number; onDevice: boolean; longSteps: number }) {
    const make = async (): Promise<Engine> => {
      const { engine } = await createBrowserEngine({ ...modeOptions(o.mode), backend: 'webgpu' });
      await engine.load({ kind: 'url', url: o.modelUrl }, undefined, { denoiseOnDevice: o.onDevice });
      return engine;
    };
    const engines: Engine[] = [];
    for (let i = 0; i < (o.mode === 'd' ? o.n + 1 : 1); i++) engines.push(await make());
    try {
      await engines[0].generate(req(0, o.size, 1)); // shaders compiled, shapes warm
      const warm = engines.map((e) => e.status().stages);
      const { latencies, wallMs, results } = await runBatch(o.mode, engines, Array.from({ length: o.n }, (_, i) => req(i, o.size)));
      // per-stage times of the measured requests only (not the warm-up)
      const stages = mergeStages(engines.map((e, i) => stageDelta(e.status().stages, warm[i])));
      const shortMs = await shortBehindLong(o.mode, engines, o.n, o.size, o.longSteps);
      const t = results.map((r) => r.metadata.transfers as NonNullable<ImageMetadata['transfers']>);
      return {
        wallMs,
        latencies,
        shortMs,
        weightBytes: engines.reduce((n, e) => n + e.status().weightBytes, 0),
        residency: engines[0].status().denoise?.residency,
        // per request per step: what crossed between host and device, and the time of its steps
        stepBytes: t.map((x) => (x.stepUploadBytes + x.stepDownloadBytes) / x.steps),
        stepMs: results.map((r) => r.metadata.timings.denoiseMs / STEPS),
        stages,
      };
    } finally {
      for (const e of engines) await e.unload();
    }
  }

  /**
   * A fetch made from this worker, and the Content-Security-Policy violations
   * the worker reported for it: the browser test checks that the policy governs
   * the worker, not only the page. Waits for the violation when the fetch failed.
   */
  async fetchFromWorker(url: string): Promise<{ status: number | null; error: string | null; violations: string[] }> {
    const violations: string[] = [];
    let reported: () => void = () => undefined;
    const violation = new Promise<void>((r) => (reported = r));
    const onViolation = (e: SecurityPolicyViolationEvent) => {
      violations.push(`${e.effectiveDirective} ${e.blockedURI}`);
      reported();
    };
    self.addEventListener('securitypolicyviolation', onViolation);
    try {
      const response = await fetch(url, { cache: 'no-store' });
      return { status: response.status, error: null, violations };
    } catch (e) {
      await violation;
      return { status: null, error: String(e), violations };
    } finally {
      self.removeEventListener('securitypolicyviolation', onViolation);
    }
  }

  /** A request whose prompt starts with "crash the worker" takes the worker down each time it runs (the attempt limit's test). */
  protected override beforeRun(req: NormalizedRequest): void {
    if (req.prompt.startsWith('crash the worker')) this.simulateCrash();
  }

  /** The worker dies as if it crashed. */
  simulateCrash(): void {
    setTimeout(() => {
      self.close();
      throw new Error('simulated worker crash');
    });
  }
}
