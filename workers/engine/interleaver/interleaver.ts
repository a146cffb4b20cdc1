// The interleaver owns the model's sessions at run time. Each cycle it:
//   1. admits queued requests while their state, plus the largest run any of
//      them needs, fits the memory budget beside the weights;
//   2. encodes the prompts of all new arrivals in one batch per text encoder;
//   3. advances every denoising request by exactly one step (round robin, so a
//      short request is never stuck behind long ones), packing the rows of
//      same-size requests into shared transformer runs whatever their
//      timestep, as many rows per run as memory and the adapter's largest
//      buffer allow (a guided request's two rows may go to two runs);
//   4. decodes finished latents in batches sized the same way, and hands each
//      image to the PNG encoder without waiting for it: encoding never holds
//      up the next step (the encoder runs off the thread where it can).
// Cancellation takes effect at once: the request's tensors are dropped and any
// run already in flight simply has its rows for that request ignored; every
// run (transformer or VAE) is filtered for requests still live just before it
// starts. No throw stops the loop: a failing progress callback, preview or PNG
// encode ends only its own request, and an error nobody can pin on one
// request ends the requests of that cycle while the loop goes on serving the
// rest. On a device that can be lost, a failed GPU call may be a loss the
// browser reports only later: its requests leave the loop at once and end
// when the device's word comes (fail()), and nothing else waits for it.
import { isFinal, type GenerateResult, type ImageMetadata, type ProgressEvent, type RequestSettings, type RequestStageTimings } from '../api/types.ts';
import { CancelledError, DeviceLostError, InferenceError, TooLargeError, formatBytes, messageOf } from '../errors.ts';
import { lossPossible, LOSS_REPORT_MS, type DeviceLoss } from '../device-loss.ts';
import { yieldToEventLoop } from '../event-loop.ts';
import { availableBytes, largestFittingSize, refusal } from '../memory/budget.ts';
import type { RunFootprint } from '../memory/footprint.ts';
import type { Ort } from '../model/component-session.ts';
import type { LoadedModel } from '../model/load-model.ts';
import { decodeTiled, latentPreview, rgbaToPng } from '../sd3/decode.ts';
import { encodePrompts } from '../sd3/encode-prompt.ts';
import { encodeImages, startLatents } from '../sd3/image-to-image.ts';
import { applyOverlay } from '../image/vae-image-processor.ts';
import { pixelsToRgba, rgbaToPixels } from '../image/pixels.ts';
import { HostDenoiser, type Denoiser } from '../denoise/denoiser.ts';
import type { RequestScope } from './request-scope.ts';
import { requestSettings } from '../api/validate.ts';
import { a1111Parameters, pngBlobWithSettings } from '../png/settings-chunks.ts';
import { StageTimer } from '../stage-timing.ts';
import { dualAttentionLayersOf, transformerFlopsPerRow } from '../flops.ts';

/** RGBA to a PNG file. Hosts bring one that does not block the step loop (a canvas in the worker, zlib's thread pool in Node). */
export type PngEncoder = (rgba: Uint8ClampedArray, width: number, height: number) => Promise<Blob>;
/** The step preview: RGBA at latent resolution from the latents. */
export type PreviewRenderer = (latents: Float32Array, channels: number, height: number, width: number, requestId: string) => Uint8ClampedArray;

/** fast-png on the calling thread: the fallback where the host offers nothing better. */
export const inlinePngEncoder: PngEncoder = async (rgba, width, height) => new Blob([rgbaToPng(rgba, width, height) as Uint8Array<ArrayBuffer>], { type: 'image/png' });

export interface InterleaverOptions {
  /** Requests denoising at once (each still bounded by the memory budget). */
  maxActive: number;
  /** Requests per transformer / VAE run. 1 turns batching off. */
  maxBatch: number;
  encodePng?: PngEncoder;
  /** Encode inside the cycle, as before the encoder moved off the step path (the benchmark's baseline). */
  encodeInline?: boolean;
  renderPreview?: PreviewRenderer;
  /** The device requests run on, where it can be lost (WebGPU in the browser): a failure on it waits for its word. */
  gpuLoss?: DeviceLoss | null;
  /** How long a failure waits for the browser to report a loss (LOSS_REPORT_MS). */
  lossReportMs?: number;
}

export const DEFAULT_MAX_ACTIVE = 16;
export const DEFAULT_MAX_BATCH = 8;

export interface InterleaverCounters {
  served: number;
  failed: number;
  cancelled: number;
  cycles: number;
  transformerRuns: number;
  /** Highest admitted bytes (states plus the largest run) ever seen: never above the budget. */
  peakAdmittedBytes: number;
  /** Most transformer rows in one run so far. */
  maxRowsPerRun: number;
  /** Time per stage (text encoders, transformer, guidance, VAE, read-backs) and the transformer's FLOPs. */
  stages: StageTimer;
}

export const newCounters = (): InterleaverCounters => ({ served: 0, failed: 0, cancelled: 0, cycles: 0, transformerRuns: 0, peakAdmittedBytes: 0, maxRowsPerRun: 0, stages: new StageTimer() });

const now = () => performance.now();

export class Interleaver {
  private readonly queue: RequestScope[] = [];
  private readonly active: RequestScope[] = [];
  /** PNG encodes under way: their requests have left the loop and resolve when the file is ready. */
  private readonly encoding = new Set<Promise<void>>();
  /** Requests whose failure waits for the device's word (was it lost?): out of the loop, their tensors freed. */
  private readonly awaitingVerdict: RequestScope[] = [];
  private readonly verdicts = new Set<Promise<void>>();
  private loop: Promise<void> | null = null;
  constructor(
    private readonly model: LoadedModel,
    private readonly ort: Ort,
    readonly options: InterleaverOptions,
    /** Passed in so totals survive a model switch. */
    readonly counters: InterleaverCounters = newCounters(),
    /** Where requests' tensors live between steps: the host (default) or the GPU. */
    readonly denoiser: Denoiser = new HostDenoiser(model, ort),
  ) {
    // the denoiser adds the GPU time of its own passes to the same stages
    this.counters.stages ??= new StageTimer();
    denoiser.stages ??= this.counters.stages;
  }

  /** Each request's share of the stage times, for its metadata. */
  private readonly requestStages = new WeakMap<RequestScope, RequestStageTimings>();

  private stagesOf(s: RequestScope): RequestStageTimings {
    let t = this.requestStages.get(s);
    if (!t) this.requestStages.set(s, (t = { transformerRuns: 0, transformerMs: 0, guidanceMs: 0, readbackMs: 0 }));
    return t;
  }

  /** Matmul FLOPs of one transformer row at this latent size (flops.ts). */
  private flopsPerRow([, h, w]: readonly [number, number, number]): number {
    const t = this.model.transformerConfig;
    const imageTokens = Math.floor(h / t.patchSize) * Math.floor(w / t.patchSize);
    return transformerFlopsPerRow({ ...t, dualAttentionLayers: dualAttentionLayersOf(this.model.info.family) }, imageTokens, this.model.dims.textTokens);
  }

  /** A read-back of a request's latents, timed. */
  private async readLatentsTimed(s: RequestScope): Promise<Float32Array> {
    const started = now();
    const latents = await this.denoiser.readLatents(s);
    const ms = now() - started;
    this.counters.stages.recordWall('readback', ms);
    this.stagesOf(s).readbackMs += ms;
    return latents;
  }

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

  /** Bytes admitted against the budget now: every active request's state plus the largest run one of them needs. */
  get admittedBytes(): number {
    return admitted(this.active);
  }

  /** Bytes requests may hold beside the weights. */
  get budgetBytes(): number {
    return availableBytes(this.model.budget);
  }

  /** Ids of every queued and running request. */
  ids(): string[] {
    return [...this.active, ...this.queue, ...this.awaitingVerdict].map((s) => s.id);
  }

  has(id: string): boolean {
    return this.find(id) !== undefined;
  }

  /** Queues a request; throws TooLargeError if it could never fit, whatever else runs. */
  submit(scope: RequestScope): Promise<GenerateResult> {
    const { budget, dims, info } = this.model;
    const no = refusal(budget, scope.footprint);
    if (no) {
      const { width, height, guidance } = scope.request;
      const fits = largestFittingSize(budget, dims, info.limits, width, height, guidance, scope.inputKind);
      const largest = fits ? `the largest ${width === height ? 'square ' : ''}size that fits is ${fits.width}x${fits.height}` : 'no size of this shape fits';
      const why =
        no.kind === 'buffer'
          ? `one buffer at ${scope.sizeKey} would be ${formatBytes(no.neededBytes)}, over this adapter's largest buffer (${formatBytes(no.limitBytes)})`
          : `${scope.sizeKey}${scope.guided ? ' with guidance' : ''} needs ~${formatBytes(no.neededBytes)} beside the ${formatBytes(budget.weightBytes)} of weights, and ${formatBytes(Math.max(0, no.limitBytes))} of the ${formatBytes(budget.memoryBytes)} GPU memory setting is left`;
      const more = no.kind === 'memory' ? `${scope.guided ? ', or use guidance <= 1 (one row instead of two)' : ''}, or raise the GPU memory setting` : '';
      throw new TooLargeError(no.neededBytes, no.limitBytes, `${why}; ${largest}${more}`, fits);
    }
    this.queue.push(scope);
    this.emit(scope, { status: 'queued', requestId: scope.id, loaded: 0, total: scope.scheduler.totalSteps, progress: 0 });
    // start on a microtask, so requests submitted together are admitted together; run() clears `loop` in the
    // same tick it finds nothing left, so a request submitted after that starts a new loop
    this.loop ??= Promise.resolve().then(() => this.run());
    return scope.result;
  }

  /** Cancels a queued or running request; its tensors are freed now. */
  cancel(id: string): boolean {
    const scope = this.find(id);
    if (!scope) return false;
    this.finish(scope, new CancelledError(id));
    return true;
  }

  /** Takes the queued requests (not yet admitted) off this interleaver, unsettled: a model switch runs them on the new model. */
  takeQueued(): RequestScope[] {
    return this.queue.splice(0);
  }

  /** Takes the running requests off, unsettled and with their tensors freed: a switch that re-runs them from their seed. */
  takeActive(): RequestScope[] {
    const taken = this.active.splice(0);
    for (const s of taken) {
      // a final phase makes a step still under way skip it (as for a cancel); resolve/reject set the real one later
      s.phase = 'cancelled';
      s.release();
    }
    return taken;
  }

  /** Ends every queued and running request with an error (device lost); their tensors are freed now. */
  failAll(error: (id: string) => Error): number {
    const all = [...this.active, ...this.queue, ...this.awaitingVerdict];
    for (const s of all) this.finish(s, error(s.id));
    return all.length;
  }

  /** Resolves when no request is queued, active or being encoded. */
  async idle(): Promise<void> {
    while (this.loop || this.encoding.size || this.verdicts.size) await Promise.all([this.loop, ...this.encoding, ...this.verdicts]);
  }

  /** Tells a request's caller of its progress; a callback that throws ends that request alone. */
  private emit(s: RequestScope, event: ProgressEvent): void {
    if (!s.onProgress || isFinal(s.phase)) return;
    try {
      s.onProgress({ ...event, state: s.phase });
    } catch (e) {
      this.finish(s, new InferenceError(`its progress callback threw (${messageOf(e)}); the request was stopped, others carry on`, { requestId: s.id, cause: e }));
    }
  }

  private find(id: string): RequestScope | undefined {
    return [...this.active, ...this.queue, ...this.awaitingVerdict].find((s) => s.id === id);
  }

  private finish(scope: RequestScope, outcome: GenerateResult | Error): void {
    if (isFinal(scope.phase)) return;
    this.withdraw(scope);
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

  /**
   * Ends requests that met an error in a stage they shared. Where it may be a
   * device loss not reported yet (a GPU call failing on a device that can be
   * lost, for no reason of ours), the requests leave the loop at once, their
   * tensors freed, and end when the device's word comes: a loss within the
   * report window ends them as device_lost (the worker replays them), else
   * they end with their own error. The loop and every other request go on
   * meanwhile; a cancel still reaches them.
   */
  private fail(scopes: readonly RequestScope[], e: unknown, own: (cause: unknown) => Error): void {
    const loss = this.options.gpuLoss ?? null;
    const known = e instanceof DeviceLostError ? e : loss?.reason != null ? new DeviceLostError(loss.reason) : null;
    if (known || !loss || !lossPossible(e)) {
      for (const s of scopes) this.finish(s, known ?? own(e));
      return;
    }
    const waiting = scopes.filter((s) => !isFinal(s.phase));
    for (const s of waiting) {
      this.withdraw(s);
      s.release();
      this.awaitingVerdict.push(s);
    }
    const verdict = loss.within(this.options.lossReportMs ?? LOSS_REPORT_MS).then((reason) => {
      for (const s of waiting) this.finish(s, reason !== null ? new DeviceLostError(reason) : own(e));
    });
    this.verdicts.add(verdict);
    void verdict.finally(() => this.verdicts.delete(verdict));
  }

  /** Still in the loop and in this phase: not ended, not waiting for a verdict. */
  private isLive(s: RequestScope, phase: 'denoising' | 'decoding'): boolean {
    return s.phase === phase && this.active.includes(s);
  }

  /** Takes a request out of the loop's lists (and the verdict's), unsettled. */
  private withdraw(s: RequestScope): void {
    for (const list of [this.active, this.queue, this.awaitingVerdict]) {
      const i = list.indexOf(s);
      if (i >= 0) list.splice(i, 1);
    }
  }

  private async run(): Promise<void> {
    try {
      while (this.queue.length || this.active.length) {
        this.counters.cycles++;
        try {
          this.admit();
          await this.encodeArrivals();
          await this.stepAll();
          await this.decodeFinished();
        } catch (e) {
          // nothing inside pinned it on one request: end this cycle's requests, keep serving the queue
          for (const s of [...this.active]) this.finish(s, new InferenceError(`the engine's step loop failed (${messageOf(e)}); the request was stopped, the engine carries on`, { requestId: s.id, cause: e }));
        }
        // let cancel() and new submissions in between cycles
        await yieldToEventLoop();
      }
    } finally {
      // in the tick the queue was found empty: a submit after this starts a new loop
      this.loop = null;
    }
  }

  private admit(): void {
    const { maxActive } = this.options;
    const available = availableBytes(this.model.budget);
    // FIFO: a large request at the head is not overtaken forever by small ones
    while (this.queue.length && this.active.length < maxActive) {
      const next = this.queue[0];
      if (admitted([...this.active, next]) > available) break;
      this.queue.shift();
      this.active.push(next);
      next.times.admitted = now();
      next.admittedCycle = this.counters.cycles;
    }
    this.counters.peakAdmittedBytes = Math.max(this.counters.peakAdmittedBytes, this.admittedBytes);
  }

  /** How many rows (or images) of one footprint a run may carry now: memory left beside every active state and the other kinds of run's cached buffers, and the largest buffer. */
  private runCapacity(per: RunFootprint, kind: RunKind): number {
    const others = RUN_KINDS.filter((k) => k !== kind);
    const cached = others.reduce((n, k) => n + Math.max(0, ...this.active.map((s) => runOf(s, k)?.activationBytes ?? 0)), 0);
    const free = availableBytes(this.model.budget) - this.active.reduce((n, s) => n + s.footprint.stateBytes, 0) - cached;
    return Math.max(1, Math.min(Math.floor(free / per.activationBytes), Math.floor(this.model.budget.maxBufferBytes / per.largestBufferBytes)));
  }

  private async encodeArrivals(): Promise<void> {
    const arrivals = this.active.filter((s) => s.phase === 'queued');
    if (!arrivals.length) return;
    const started = now();
    for (const s of arrivals) {
      s.phase = 'encoding';
      this.emit(s, { status: 'encoding', requestId: s.id, loaded: 0, total: s.scheduler.totalSteps, progress: 0 });
    }
    const texts = arrivals.flatMap((s) => (s.guided ? [s.request.prompt, s.request.negativePrompt] : [s.request.prompt]));
    let embeddings;
    try {
      embeddings = await encodePrompts(this.model, this.ort, texts);
    } catch (e) {
      this.fail(arrivals, e, (cause) => new InferenceError(`prompt encoding failed: ${messageOf(cause)}`, { cause }));
      return;
    }
    const textMs = now() - started;
    this.counters.stages.recordWall('textEncoders', textMs);
    // image requests: their images through the VAE encoder, same sizes in shared runs
    const encoded = await this.encodeImages(arrivals.filter((s) => s.input && !isFinal(s.phase)));
    let k = 0;
    for (const s of arrivals) {
      const cond = embeddings[k++];
      const uncond = s.guided ? embeddings[k++] : null;
      if (isFinal(s.phase) || !this.active.includes(s)) continue; // cancelled while encoding, or its image encode failed
      if (cond.truncated) s.warnings.push('prompt: longer than the text encoders accept; the end was cut off');
      if (uncond?.truncated) s.warnings.push('negativePrompt: longer than the text encoders accept; the end was cut off');
      const [C, h, w] = s.latentShape;
      try {
        const image = encoded.get(s);
        if (s.input && !image) throw new Error('its image was not encoded');
        // an image request's draws in the engine's order: the noise (as text to image), then the posterior's eps
        const start = image ? startLatents(image.params, (n) => s.rng.normal(n), s.latentShape, s.scheduler.sigma, this.model.vaeConfig, s.input!.latentMask) : { latents: s.rng.normal(C * h * w), known: null };
        s.tensors = this.denoiser.begin(s, start.latents, cond, uncond, start.known);
        s.times.encodeMs = textMs + (image?.ms ?? 0);
      } catch (e) {
        this.fail([s], e, (cause) => new InferenceError(`its tensors could not be placed on the device (${messageOf(cause)})`, { requestId: s.id, cause }));
        continue;
      }
      s.times.denoiseStart = now();
      s.phase = 'denoising';
    }
  }

  /** Image requests' init images through the VAE encoder, same-size ones in shared runs; a failed run ends its requests. */
  private async encodeImages(scopes: RequestScope[]): Promise<Map<RequestScope, { params: Float32Array; ms: number }>> {
    const out = new Map<RequestScope, { params: Float32Array; ms: number }>();
    for (const group of groupBySize(scopes)) {
      for (const planned of this.pack(group.map((scope) => ({ scope })), this.runCapacity(group[0].footprint.encode!, 'encode'))) {
        const batch = planned.map((r) => r.scope).filter((s) => !isFinal(s.phase) && s.input?.pixels);
        if (!batch.length) continue;
        const { width, height } = batch[0].request;
        const started = now();
        try {
          const params = await this.counters.stages.wallTime('vaeEncode', () => encodeImages(this.model, this.ort, batch.map((s) => s.input!.pixels!), height, width));
          const ms = now() - started;
          batch.forEach((s, i) => {
            out.set(s, { params: params[i], ms });
            s.input!.pixels = null; // encoded: the pixels are not needed again
          });
        } catch (e) {
          this.fail(batch, e, (cause) => new InferenceError(`VAE encode of its image failed: ${messageOf(cause)}`, { cause }));
        }
      }
    }
    return out;
  }

  /** Active requests in one phase, grouped by image size, in arrival order. */
  private bySize(phase: 'denoising' | 'decoding'): RequestScope[][] {
    return groupBySize(this.active.filter((s) => s.phase === phase));
  }

  /** Cuts items into runs of at most `capacity` items from at most maxBatch requests. */
  private pack<T extends { scope: RequestScope }>(items: T[], capacity: number): T[][] {
    const runs: T[][] = [];
    let run: T[] = [];
    let scopes = new Set<RequestScope>();
    for (const item of items) {
      const newScope = !scopes.has(item.scope);
      if (run.length && (run.length >= capacity || (newScope && scopes.size >= this.options.maxBatch))) {
        runs.push(run);
        run = [];
        scopes = new Set();
      }
      run.push(item);
      scopes.add(item.scope);
    }
    if (run.length) runs.push(run);
    return runs;
  }

  private async stepAll(): Promise<void> {
    for (const group of this.bySize('denoising')) {
      const rows = group.flatMap((scope) => (scope.guided ? [{ scope, branch: 'uncond' as const }, { scope, branch: 'cond' as const }] : [{ scope, branch: 'cond' as const }]));
      for (const run of this.pack(rows, this.runCapacity(group[0].footprint.row, 'row'))) {
        const live = run.filter((r) => this.isLive(r.scope, 'denoising'));
        if (!live.length) continue;
        try {
          const started = now();
          await this.denoiser.predict(live, live[0].scope.latentShape);
          const ms = now() - started;
          this.counters.stages.recordTransformer(ms, live.length, this.flopsPerRow(live[0].scope.latentShape), live[0].scope.sizeKey);
          for (const scope of new Set(live.map((r) => r.scope))) {
            const t = this.stagesOf(scope);
            t.transformerRuns++;
            t.transformerMs += ms;
          }
          this.counters.transformerRuns++;
          this.counters.maxRowsPerRun = Math.max(this.counters.maxRowsPerRun, live.length);
        } catch (e) {
          this.fail([...new Set(live.map((r) => r.scope))], e, (cause) => new InferenceError(`transformer run failed: ${messageOf(cause)}`, { cause }));
          continue;
        }
        await this.advance([...new Set(live.map((r) => r.scope))].filter((s) => this.isLive(s, 'denoising') && s.tensors?.ready));
      }
    }
  }

  /** Every branch is back: guidance, the finite check and one Euler step (one pass on the device), then progress. */
  private async advance(scopes: RequestScope[]): Promise<void> {
    if (!scopes.length) return;
    let bad: Set<RequestScope>;
    try {
      const started = now();
      bad = await this.denoiser.advance(scopes);
      const ms = now() - started;
      this.counters.stages.recordWall('guidance', ms);
      for (const s of scopes) this.stagesOf(s).guidanceMs += ms;
    } catch (e) {
      this.fail(scopes, e, (cause) => new InferenceError(`its guidance and Euler step failed (${messageOf(cause)})`, { cause }));
      return;
    }
    for (const s of scopes) {
      if (isFinal(s.phase)) continue; // cancelled while the update ran
      if (bad.has(s)) {
        this.finish(s, new InferenceError(`non-finite values at step ${s.scheduler.stepIndex + 1}; the request was stopped, others carry on`, { requestId: s.id }));
        continue;
      }
      s.steps++;
      if (s.scheduler.done) s.phase = 'decoding';
      const [C, h, w] = s.latentShape;
      const total = s.scheduler.totalSteps;
      let preview: ProgressEvent['preview'];
      if (s.wantsPreview) {
        try {
          const latents = await this.readLatentsTimed(s);
          if (isFinal(s.phase)) continue;
          preview = { width: w, height: h, rgba: (this.options.renderPreview ?? latentPreview)(latents, C, h, w, s.id) };
        } catch (e) {
          this.fail([s], e, (cause) => new InferenceError(`its step preview failed (${messageOf(cause)}); the request was stopped, others carry on`, { requestId: s.id, cause }));
          continue;
        }
      }
      this.emit(s, { status: 'step', requestId: s.id, loaded: s.scheduler.stepIndex, total, progress: (100 * s.scheduler.stepIndex) / total, elapsedMs: now() - s.times.submitted, preview });
    }
  }

  private async decodeFinished(): Promise<void> {
    // tiled decodes go one image at a time; whole decodes of one size share runs
    const runs = this.bySize('decoding').flatMap((group) => {
      const tiled = group.filter((s) => s.footprint.decodeTile);
      const whole = group.filter((s) => !s.footprint.decodeTile);
      return [...tiled.map((s) => [s]), ...(whole.length ? this.pack(whole.map((scope) => ({ scope })), this.runCapacity(whole[0].footprint.decode, 'decode')).map((run) => run.map((r) => r.scope)) : [])];
    });
    for (const planned of runs) {
      const started = now();
      for (const s of planned) this.emit(s, { status: 'decoding', requestId: s.id, loaded: s.scheduler.totalSteps, total: s.scheduler.totalSteps, progress: 100 });
      // planned before the first run: requests that ended since (a cancel during an earlier run, a callback that threw just now) are left out
      const batch = planned.filter((s) => this.isLive(s, 'decoding'));
      if (!batch.length) continue;
      const [, h, w] = batch[0].latentShape;
      let images: Uint8ClampedArray[];
      try {
        const tile = batch[0].footprint.decodeTile;
        // tiles are cut on the host: a tiled image's latents come back once
        if (tile) {
          const latents = await this.readLatentsTimed(batch[0]);
          images = [await this.counters.stages.wallTime('vaeDecode', () => decodeTiled(this.model, this.ort, latents, h, w, tile))];
        } else images = await this.counters.stages.wallTime('vaeDecode', () => this.denoiser.decode(batch, h, w));
        if (tile) batch[0].warnings.push(`decoded in VAE tiles of ${tile * this.model.vaeConfig.scaleFactor} px to fit memory (seams blended; a whole decode differs slightly near them)`);
      } catch (e) {
        this.fail(batch, e, (cause) => new InferenceError(`VAE decode failed: ${messageOf(cause)}`, { cause }));
        continue;
      }
      for (const [i, s] of batch.entries()) {
        if (!this.isLive(s, 'decoding')) continue;
        const t = s.times;
        const decoded = now();
        const metadata: Omit<ImageMetadata, keyof RequestSettings> = {
          modelId: this.model.info.id,
          backend: this.model.info.backend,
          timings: { queuedMs: t.admitted - t.submitted, encodeMs: t.encodeMs, denoiseMs: started - t.denoiseStart, decodeMs: decoded - started, totalMs: decoded - t.submitted, stages: { ...this.stagesOf(s) } },
          createdAt: new Date().toISOString(),
          warnings: [...s.warnings],
          transfers: { residency: this.denoiser.residency, steps: s.steps, ...s.transfers },
        };
        if (this.options.encodeInline) await this.deliver(s, images[i], metadata);
        else {
          // off the step path: the next cycle starts while the file is made
          const delivery = this.deliver(s, images[i], metadata);
          this.encoding.add(delivery);
          void delivery.finally(() => this.encoding.delete(delivery));
        }
      }
    }
  }

  /** Leaves the loop (its tensors freed), composites a cropped inpaint back into its image, encodes the PNG, then resolves; a failure here fails this request alone. */
  private async deliver(s: RequestScope, decoded: Uint8ClampedArray, made: Omit<ImageMetadata, keyof RequestSettings>): Promise<void> {
    const i = this.active.indexOf(s);
    if (i >= 0) this.active.splice(i, 1);
    s.phase = 'saving';
    s.release();
    let rgba = decoded;
    let { width, height } = s.request;
    let png: Blob;
    let metadata: ImageMetadata;
    try {
      // padding_mask_crop: the generated crop goes back into the whole original, where the mask repaints
      const overlay = s.input?.overlay;
      if (overlay) {
        const full = applyOverlay(overlay.mask, overlay.image, rgbaToPixels(decoded, width, height), overlay.region);
        ({ width, height } = full);
        rgba = pixelsToRgba(full);
      }
      // the settings recorded name the input images by their hashes
      metadata = { ...(await requestSettings(s.request)), ...made };
      // the image's settings go inside its PNG: A1111's `parameters` and our metadata as JSON
      png = await pngBlobWithSettings(await (this.options.encodePng ?? inlinePngEncoder)(rgba, width, height), a1111Parameters(metadata), metadata);
    } catch (e) {
      this.finish(s, new InferenceError(`encoding its PNG failed (${messageOf(e)}); the request was stopped, others carry on`, { requestId: s.id, cause: e }));
      return;
    }
    this.emit(s, { status: 'complete', requestId: s.id, loaded: s.scheduler.totalSteps, total: s.scheduler.totalSteps, progress: 100, elapsedMs: now() - s.times.submitted });
    this.finish(s, { id: s.id, width, height, rgba, png, metadata });
  }
}

/**
 * States of every request, plus the largest transformer row, decode and
 * encode any of them needs: runs never overlap, but onnxruntime keeps each
 * kind's buffers cached for its next run, so the kinds add up.
 */
function admitted(scopes: readonly RequestScope[]): number {
  let state = 0;
  const largest = { row: 0, decode: 0, encode: 0 };
  for (const s of scopes) {
    state += s.footprint.stateBytes;
    for (const k of RUN_KINDS) largest[k] = Math.max(largest[k], runOf(s, k)?.activationBytes ?? 0);
  }
  return state + largest.row + largest.decode + largest.encode;
}

/** Requests grouped by image size (sizes never share a run), in arrival order. */
function groupBySize(scopes: readonly RequestScope[]): RequestScope[][] {
  const groups = new Map<string, RequestScope[]>();
  for (const s of scopes) {
    const group = groups.get(s.sizeKey) ?? [];
    group.push(s);
    groups.set(s.sizeKey, group);
  }
  return [...groups.values()];
}

/** The three kinds of run: a transformer row, a VAE decode, and (image requests) a VAE encode. */
type RunKind = 'row' | 'decode' | 'encode';
const RUN_KINDS: readonly RunKind[] = ['row', 'decode', 'encode'];
const runOf = (s: RequestScope, kind: RunKind): RunFootprint | null => s.footprint[kind];
