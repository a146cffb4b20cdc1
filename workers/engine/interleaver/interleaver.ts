// The interleaver owns the model's sessions at run time. Each cycle it:
//   1. admits queued requests while their memory footprint fits the budget;
//   2. encodes the prompts of all new arrivals in one batch per text encoder;
//   3. advances every denoising request by exactly one step (round robin, so a
//      short request is never stuck behind long ones), batching requests of the
//      same size into shared transformer runs whatever their timestep;
//   4. decodes finished latents in batches and resolves their requests.
// Cancellation takes effect at once: the request's tensors are dropped and any
// run already in flight simply has its rows for that request ignored.
import type { GenerateResult } from '../api/types.ts';
import { CancelledError, InferenceError, TooLargeError, formatBytes } from '../errors.ts';
import type { Ort } from '../model/component-session.ts';
import type { LoadedModel } from '../model/load-model.ts';
import { decodeLatents, latentPreview, rgbaToPng } from '../sd3/decode.ts';
import { predictVelocities } from '../sd3/denoise-step.ts';
import { encodePrompts } from '../sd3/encode-prompt.ts';
import type { MemoryBudget } from './memory-budget.ts';
import type { RequestScope } from './request-scope.ts';

export interface InterleaverOptions {
  budget: MemoryBudget;
  /** Requests denoising at once (each still bounded by the memory budget). */
  maxActive: number;
  /** Requests per transformer / VAE run. 1 turns batching off. */
  maxBatch: number;
}

export const DEFAULT_MAX_ACTIVE = 16;
export const DEFAULT_MAX_BATCH = 8;

export interface InterleaverCounters {
  served: number;
  failed: number;
  cancelled: number;
  cycles: number;
  transformerRuns: number;
  /** Highest sum of admitted footprints ever seen: never above the budget. */
  peakAdmittedBytes: number;
}

export const newCounters = (): InterleaverCounters => ({ served: 0, failed: 0, cancelled: 0, cycles: 0, transformerRuns: 0, peakAdmittedBytes: 0 });

const now = () => performance.now();

export class Interleaver {
  private readonly queue: RequestScope[] = [];
  private readonly active: RequestScope[] = [];
  private loop: Promise<void> | null = null;
  constructor(
    private readonly model: LoadedModel,
    private readonly ort: Ort,
    readonly options: InterleaverOptions,
    /** Passed in so totals survive a model switch. */
    readonly counters: InterleaverCounters = newCounters(),
  ) {}

  get queuedCount(): number {
    return this.queue.length;
  }

  get activeCount(): number {
    return this.active.length;
  }

  /** Bytes of per-request tensors held now, by every request. */
  get requestBytes(): number {
    return this.active.reduce((n, s) => n + s.heldBytes, 0);
  }

  /** Bytes admitted against the budget now (footprints of active requests). */
  get admittedBytes(): number {
    return this.active.reduce((n, s) => n + s.footprint.totalBytes, 0);
  }

  /** Ids of every queued and running request. */
  ids(): string[] {
    return [...this.active, ...this.queue].map((s) => s.id);
  }

  has(id: string): boolean {
    return this.find(id) !== undefined;
  }

  /** Queues a request; throws TooLargeError if it could never fit, whatever else runs. */
  submit(scope: RequestScope): Promise<GenerateResult> {
    const { budget } = this.options;
    const fp = scope.footprint;
    if (fp.totalBytes > budget.totalBytes) {
      throw new TooLargeError(fp.totalBytes, budget.totalBytes, `try a smaller size than ${scope.sizeKey}${scope.guided ? ' or guidance <= 1 (one branch instead of two)' : ''}, or raise the memory cap`);
    }
    if (fp.largestBufferBytes > budget.maxBufferBytes) {
      throw new TooLargeError(fp.largestBufferBytes, budget.maxBufferBytes, `one attention buffer at ${scope.sizeKey} exceeds this adapter's largest buffer (${formatBytes(budget.maxBufferBytes)}); try a smaller size`);
    }
    this.queue.push(scope);
    scope.onProgress?.({ status: 'queued', requestId: scope.id, loaded: 0, total: scope.scheduler.totalSteps, progress: 0 });
    // start on a microtask, so requests submitted together are admitted together
    this.loop ??= Promise.resolve()
      .then(() => this.run())
      .finally(() => (this.loop = null));
    return scope.result;
  }

  /** Cancels a queued or running request; its tensors are freed now. */
  cancel(id: string): boolean {
    const scope = this.find(id);
    if (!scope) return false;
    this.finish(scope, new CancelledError(id));
    return true;
  }

  /** Ends every queued and running request with an error (device lost); their tensors are freed now. */
  failAll(error: (id: string) => Error): number {
    const all = [...this.active, ...this.queue];
    for (const s of all) this.finish(s, error(s.id));
    return all.length;
  }

  /** Resolves when no request is queued or active. */
  async idle(): Promise<void> {
    while (this.loop) await this.loop;
  }

  private find(id: string): RequestScope | undefined {
    return this.active.find((s) => s.id === id) ?? this.queue.find((s) => s.id === id);
  }

  private finish(scope: RequestScope, outcome: GenerateResult | Error): void {
    if (scope.phase === 'finished') return;
    for (const list of [this.active, this.queue]) {
      const i = list.indexOf(scope);
      if (i >= 0) list.splice(i, 1);
    }
    scope.times.finished = now();
    scope.finishedCycle = this.counters.cycles;
    if (outcome instanceof Error) {
      if (outcome instanceof CancelledError) this.counters.cancelled++;
      else this.counters.failed++;
      scope.reject(outcome);
    } else {
      this.counters.served++;
      scope.resolve(outcome);
    }
  }

  private async run(): Promise<void> {
    while (this.queue.length || this.active.length) {
      this.counters.cycles++;
      this.admit();
      await this.encodeArrivals();
      await this.stepAll();
      await this.decodeFinished();
      // let cancel() and new submissions in between cycles
      await yieldToEventLoop();
    }
  }

  private admit(): void {
    const { budget, maxActive } = this.options;
    let admitted = this.admittedBytes;
    // FIFO: a large request at the head is not overtaken forever by small ones
    while (this.queue.length && this.active.length < maxActive) {
      const next = this.queue[0];
      if (admitted + next.footprint.totalBytes > budget.totalBytes) break;
      this.queue.shift();
      this.active.push(next);
      admitted += next.footprint.totalBytes;
      next.times.admitted = now();
      next.admittedCycle = this.counters.cycles;
    }
    this.counters.peakAdmittedBytes = Math.max(this.counters.peakAdmittedBytes, admitted);
  }

  private async encodeArrivals(): Promise<void> {
    const arrivals = this.active.filter((s) => s.phase === 'queued');
    if (!arrivals.length) return;
    const started = now();
    for (const s of arrivals) s.onProgress?.({ status: 'encoding', requestId: s.id, loaded: 0, total: s.scheduler.totalSteps, progress: 0 });
    const texts = arrivals.flatMap((s) => (s.guided ? [s.request.prompt, s.request.negativePrompt] : [s.request.prompt]));
    let embeddings;
    try {
      embeddings = await encodePrompts(this.model, this.ort, texts);
    } catch (e) {
      for (const s of arrivals) this.finish(s, new InferenceError(`prompt encoding failed: ${(e as Error).message}`));
      return;
    }
    const encodeMs = now() - started;
    let k = 0;
    for (const s of arrivals) {
      const cond = embeddings[k++];
      const uncond = s.guided ? embeddings[k++] : null;
      if (s.phase === 'finished') continue; // cancelled while encoding
      s.cond = cond;
      s.uncond = uncond;
      if (cond.truncated) s.warnings.push('prompt: longer than the text encoders accept; the end was cut off');
      if (uncond?.truncated) s.warnings.push('negativePrompt: longer than the text encoders accept; the end was cut off');
      const [C, h, w] = s.latentShape;
      s.latents = s.rng.normal(C * h * w);
      s.times.encodeMs = encodeMs;
      s.times.denoiseStart = now();
      s.phase = 'denoising';
    }
  }

  /** Requests of one size, in arrival order, cut into runs of at most maxBatch requests. */
  private batches(phase: 'denoising' | 'decoding'): RequestScope[][] {
    const bySize = new Map<string, RequestScope[]>();
    for (const s of this.active) {
      if (s.phase !== phase) continue;
      const group = bySize.get(s.sizeKey) ?? [];
      group.push(s);
      bySize.set(s.sizeKey, group);
    }
    const out: RequestScope[][] = [];
    for (const group of bySize.values()) {
      let chunk: RequestScope[] = [];
      let rows = 0;
      for (const s of group) {
        // also keep each run's largest buffer under the adapter's per-buffer limit
        const tooBig = (rows + s.rows) * s.footprint.largestBufferBytes > this.options.budget.maxBufferBytes;
        if (chunk.length && (chunk.length >= this.options.maxBatch || tooBig)) {
          out.push(chunk);
          chunk = [];
          rows = 0;
        }
        chunk.push(s);
        rows += s.rows;
      }
      if (chunk.length) out.push(chunk);
    }
    return out;
  }

  private async stepAll(): Promise<void> {
    for (const batch of this.batches('denoising')) {
      const live = batch.filter((s) => s.phase === 'denoising');
      if (!live.length) continue;
      let velocities: Float32Array[];
      try {
        velocities = await predictVelocities(
          this.model,
          this.ort,
          live.map((s) => ({ latents: s.latents!, timestep: s.scheduler.timestep, guidance: s.request.guidance, uncond: s.uncond, cond: s.cond! })),
          live[0].latentShape,
        );
        this.counters.transformerRuns++;
      } catch (e) {
        for (const s of live) this.finish(s, new InferenceError(`transformer run failed: ${(e as Error).message}`));
        continue;
      }
      live.forEach((s, i) => {
        if (s.phase !== 'denoising') return; // cancelled during the run
        const v = velocities[i];
        if (!allFinite(v)) {
          this.finish(s, new InferenceError(`request ${s.id}: non-finite values at step ${s.scheduler.stepIndex + 1}; the request was stopped, others carry on`));
          return;
        }
        s.scheduler.step(s.latents!, v);
        if (s.scheduler.done) s.phase = 'decoding';
        const [C, h, w] = s.latentShape;
        const total = s.scheduler.totalSteps;
        s.onProgress?.({
          status: 'step',
          requestId: s.id,
          loaded: s.scheduler.stepIndex,
          total,
          progress: (100 * s.scheduler.stepIndex) / total,
          elapsedMs: now() - s.times.submitted,
          preview: s.wantsPreview ? { width: w, height: h, rgba: latentPreview(s.latents!, C, h, w) } : undefined,
        });
      });
    }
  }

  private async decodeFinished(): Promise<void> {
    for (const batch of this.batches('decoding')) {
      const started = now();
      for (const s of batch) s.onProgress?.({ status: 'decoding', requestId: s.id, loaded: s.scheduler.totalSteps, total: s.scheduler.totalSteps, progress: 100 });
      const [, h, w] = batch[0].latentShape;
      let images: Uint8ClampedArray[];
      try {
        images = await decodeLatents(this.model, this.ort, batch.map((s) => s.latents!), h, w);
      } catch (e) {
        for (const s of batch) this.finish(s, new InferenceError(`VAE decode failed: ${(e as Error).message}`));
        continue;
      }
      batch.forEach((s, i) => {
        if (s.phase !== 'decoding') return;
        const { width, height } = s.request;
        const end = now();
        const png = rgbaToPng(images[i], width, height);
        const t = s.times;
        s.onProgress?.({ status: 'complete', requestId: s.id, loaded: s.scheduler.totalSteps, total: s.scheduler.totalSteps, progress: 100, elapsedMs: end - t.submitted });
        this.finish(s, {
          id: s.id,
          width,
          height,
          rgba: images[i],
          png,
          metadata: {
            ...s.request,
            modelId: this.model.info.id,
            backend: this.model.info.backend,
            timings: {
              queuedMs: t.admitted - t.submitted,
              encodeMs: t.encodeMs,
              denoiseMs: started - t.denoiseStart,
              decodeMs: end - started,
              totalMs: end - t.submitted,
            },
            createdAt: new Date().toISOString(),
            warnings: [...s.warnings],
          },
        });
      });
    }
  }
}

/** A macrotask turn without setTimeout's clamping (1 ms in Node, 4 ms nested in browsers). */
function yieldToEventLoop(): Promise<void> {
  const g = globalThis as { setImmediate?: (cb: () => void) => void };
  if (g.setImmediate) return new Promise((r) => g.setImmediate!(r));
  return new Promise((r) => {
    const ch = new MessageChannel();
    ch.port1.onmessage = () => {
      ch.port1.close();
      r();
    };
    ch.port2.postMessage(null);
  });
}

function allFinite(a: Float32Array): boolean {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return false;
  return true;
}
