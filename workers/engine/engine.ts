// The engine's public surface: load / generate / cancel / status. It knows
// nothing of workers or messaging (workers/engine.worker.ts adapts it) and
// nothing of the DOM, so the CLI and the benchmark run it in Node unchanged.
import type { BackendName, EngineStatus, RuntimeStatus, GenerateResult, ModelInfo, ModelSourceSpec, ProgressCallback } from './api/types.ts';
import { normalizeRequest, renormalizeRequest, type NormalizedRequest } from './api/validate.ts';
import { CancelledError, DeviceLostError, formatBytes, InvalidRequestError, LoadAbortedError, ModelLoadError, ModelNotLoadedError, ModelTooLargeError, messageOf } from './errors.ts';
import { DEFAULT_MAX_ACTIVE, DEFAULT_MAX_BATCH, Interleaver, newCounters, type PngEncoder, type PreviewRenderer } from './interleaver/interleaver.ts';
import { RequestScope } from './interleaver/request-scope.ts';
import { RequestSchedulerState } from './scheduler/flow-match-euler.ts';
import { prepareImageInput, strengthStart } from './sd3/image-to-image.ts';
import { fitRequest, MemoryLedger, modelNeedBytes } from './memory/budget.ts';
import { smallestRequestBytes } from './memory/footprint.ts';
import type { Ort } from './model/component-session.ts';
import { defaultDeviceFit, type DeviceFit } from './model/device-fit.ts';
import { CachedModelFiles, isCacheable, type FileCache } from './model/file-cache.ts';
import { loadModel, type LoadedModel, type ModelPlan } from './model/load-model.ts';
import { openModelFiles, type HubAccess, type ModelFiles } from './model/model-files.ts';
import { deviceQueue } from './model/run-queue.ts';
import { HostDenoiser } from './denoise/denoiser.ts';
import { WebGpuDenoiser } from './denoise/webgpu-denoiser.ts';
import type { DeviceLoss } from './device-loss.ts';

export interface EngineOptions {
  /** The onnxruntime module (onnxruntime-web's wasm or webgpu build, or onnxruntime-node), chosen by the entry point. */
  ort: Ort;
  backend: BackendName;
  /** Native onnxruntime: sessions from files on disk, with these session options (workers/engine/runtime/node-runtime.ts). */
  native?: { sessionOptions: Record<string, unknown> };
  /** How the runtime was chosen, for status() (Node entries). */
  runtimeStatus?: RuntimeStatus;
  /** External data streams from Blobs (onnxruntime-web's JSPI build): no file-size limit, no copy in memory. */
  streaming?: boolean;
  /** The GPUDevice WebGPU sessions run on (browser entry); opaque to the engine. */
  webgpuDevice?: unknown;
  /** Human-readable adapter description for status(). */
  adapter?: string | null;
  maxActive?: number;
  /** Makes each image's PNG off the step loop (the Node and browser entries bring one; fast-png inline otherwise). */
  encodePng?: PngEncoder;
  /** Benchmark baseline: encode inside the step loop, as before the encoder moved off it. */
  encodeInline?: boolean;
  /** The step preview (a latent-to-RGB sketch by default). */
  renderPreview?: PreviewRenderer;
  maxBatch?: number;
  /** Maps a source to its files; Node entry points add `path` support. */
  openFiles?: (spec: ModelSourceSpec, access?: HubAccess) => ModelFiles;
  /** Download cache for URL and Hub sources (Cache Storage in the browser, a folder in Node). */
  fileCache?: FileCache;
  /** What the device can hold (memory, largest buffer, features): the one memory budget for loads and requests. */
  deviceFit?: Partial<DeviceFit>;
  /** The device requests run on, where it can be lost (the browser's WebGPU device): a failed call on it waits for the
   * browser's word of a loss before it counts as the request's own, without holding up the other requests. */
  gpuLoss?: DeviceLoss | null;
  /** How long that wait lasts (device-loss.ts LOSS_REPORT_MS). */
  lossReportMs?: number;
  /** On WebGPU, keep latents, embeddings and the update on the GPU between steps (default true; false: the host path, for comparison). Takes effect at the next load. */
  denoiseOnDevice?: boolean;
}

export interface LoadModelOptions {
  /** Skip text_encoder_3 (T5): zeros instead, as SD3 allows; saves memory. */
  skipT5?: boolean;
  t5MaxLength?: number;
  /** Overrides the engine's device fit for this load (tests lower the budget). */
  fit?: Partial<DeviceFit>;
  /** Diagnostics: false hands external data over as buffers even where the runtime could stream Blobs (the benchmark compares both). */
  streamExternalData?: boolean;
  /** Overrides the engine's denoiseOnDevice for this model (tests and the benchmark compare both paths). */
  denoiseOnDevice?: boolean;
  /** A Hugging Face token for this load's Hub source (gated repos): sent to the Hub host only, never recorded. */
  hubToken?: string;
  /**
   * What happens to requests running on the old model when this load replaces it: 'finish' (default) lets
   * them end on the old model before it is released; 'rerun' starts them again from their seed on the new
   * one. Requests still queued always run on the new model. Nothing accepted fails because of a switch.
   * When both models cannot fit the memory budget together, the old one is released (after its running
   * requests finish, or once they are taken, with 'rerun') before the new one's sessions are made.
   */
  onSwitch?: 'finish' | 'rerun';
}

/** Where a source's files come from: two folders both named `model` (or `onnx`) are two models, though their ids agree. */
function sourceKey(source: ModelSourceSpec | ModelFiles, id: string): string {
  if ('read' in source || source.kind === 'directory') return `id:${id}`;
  if (source.kind === 'path') return `path:${source.path}`;
  if (source.kind === 'url') return `url:${source.url}`;
  return `hub:${source.host ?? ''}/${source.repo}@${source.revision ?? ''}/${source.subfolder ?? ''}`;
}

/** What makes two loads the same: the source and every option that changes the sessions (not the token, not onSwitch). */
function loadKey(id: string, opts: LoadModelOptions, backend: BackendName, engineFit: Partial<DeviceFit> = {}): string {
  const { skipT5, t5MaxLength, fit, streamExternalData, denoiseOnDevice } = opts;
  // the fit in effect: a form that spells out the default budget asks for the same load
  const { memoryBytes } = defaultDeviceFit(backend, { ...engineFit, ...fit });
  const effective = Object.entries({ ...engineFit, ...fit, memoryBytes }).sort(([a], [b]) => a.localeCompare(b));
  return JSON.stringify({ id, skipT5: skipT5 ?? false, t5MaxLength, fit: effective, streamExternalData, denoiseOnDevice });
}

export interface GenerateOptions {
  onProgress?: ProgressCallback;
  signal?: AbortSignal;
  /** Attach a cheap latent-to-RGB preview to each step event. */
  preview?: boolean;
  /** The request is already normalize()d (the worker normalizes once, to store it before it runs): the fields it
   * defaulted are filled in again from the model that runs it, and every field is checked against that model. */
  normalized?: boolean;
}

const randomSeed = () => crypto.getRandomValues(new Uint32Array(1))[0];

/** Resolves when the signal aborts (never without one). */
const aborted = (signal?: AbortSignal) => new Promise<void>((resolve) => signal?.addEventListener('abort', () => resolve(), { once: true }));
const newId = () => crypto.randomUUID();

/**
 * y = -x over 4 floats. onnxruntime-web's WebGPU backend frees a released
 * session's buffers only at its next submit (they wait in a pending list):
 * one run of this graph after a model's release makes it free them (or pool
 * them for the next model's buffers of the same size) before the next model
 * allocates its own.
 */
export const FLUSH_GRAPH = Uint8Array.from(
  atob('CAgSGHNkMy13ZWJncHUgbW9kZWwgYnVpbGRlcjpnChgKAXgSBW5lZ18wGgVOZWdfMCIDTmVnOgAKIgoFbmVnXzASAXkaCklkZW50aXR5XzEiCElkZW50aXR5OgASBWZsdXNoWg8KAXgSCgoICAESBAoCCARiDwoBeRIKCggIARIECgIIBEIECgAQEQ=='),
  (c) => c.charCodeAt(0),
);

export class Engine {
  private loaded: LoadedModel | null = null;
  /** A load under way: requests submitted meanwhile wait for it and run on its model. */
  private loading: { controller: AbortController; settled: Promise<unknown>; source: string } | null = null;
  private lostReason: string | null = null;
  private interleaver: Interleaver | null = null;
  /** The loaded model's load key: loading the same again is a no-op. */
  private loadedKey: string | null = null;
  /** Interleavers of replaced models whose running requests are finishing before their model is released. */
  private readonly draining = new Set<Interleaver>();
  /** Replaced models being released once their requests end (idle() waits for it). */
  private retiring: Promise<void> = Promise.resolve();
  private readonly counters = newCounters();
  /** Every model resident on the device (loading, loaded, draining): a switch checks the next model against it. */
  private readonly ledger = new MemoryLedger();
  /** Requests taken off a model released to make room for the next one: they run on the next model installed. */
  private readonly held: RequestScope[] = [];
  /** How the loaded model was loaded: a switch that released it and then failed loads it again. */
  private loadedSource: { source: ModelSourceSpec | ModelFiles; opts: LoadModelOptions } | null = null;
  /** The model released to make room for a load still under way: reloaded if that load fails. */
  private evicted: { source: ModelSourceSpec | ModelFiles; opts: LoadModelOptions; info: ModelInfo } | null = null;
  /** Why no model is loaded, when a load failed and left none. */
  private noModelReason: string | null = null;
  /** The load under way brings back a model released for a load that failed (noModelReason says so). */
  private reloadingEvicted = false;
  /** How the last load made room: beside the resident models, or after releasing them. */
  private lastSwitch: NonNullable<EngineStatus['memory']>['lastLoad'] = null;

  constructor(readonly options: EngineOptions) {}

  /** The loaded model's sessions (benchmarks and tests count runs on them). */
  get model(): LoadedModel | null {
    return this.loaded;
  }

  /**
   * Loads a model once; every later request shares its sessions. Loading the
   * model already loaded (same source and options) is a no-op. It may start
   * at any time: requests submitted while it runs wait and run on the new
   * model; requests queued on the old one move to the new one; requests
   * running on the old one finish there (or are re-run on the new one, with
   * `onSwitch: 'rerun'`) before the old model is released. A newer load, or
   * `signal`, aborts it. A failed or aborted load leaves the previous model
   * loaded and working.
   *
   * Memory: when the new model (weights and its smallest request) fits the
   * budget beside every model still resident, it loads while the old one
   * serves. When it does not, the old model stops taking work, its running
   * requests finish (or move, with 'rerun'), it is released, and only then
   * are the new model's sessions made; requests wait for the new model. If
   * that load then fails or is aborted (not replaced by a newer load), the
   * released model is loaded again and the waiting requests run on it; if
   * that fails too, no model is loaded and status() says why. A model that
   * cannot fit even alone is refused, with numbers, before anything is
   * released.
   */
  async load(source: ModelSourceSpec | ModelFiles, onProgress?: ProgressCallback, opts: LoadModelOptions = {}, signal?: AbortSignal): Promise<ModelInfo> {
    const name = 'read' in source ? source.id : source.kind === 'hub' ? source.repo : source.kind === 'url' ? source.url : source.kind === 'path' ? source.path : (source.name ?? 'a local folder');
    const key = loadKey(sourceKey(source, this.sourceId(source)), opts, this.options.backend, this.options.deviceFit);
    const isLoaded = () => this.loaded !== null && this.lostReason === null && this.loadedKey === key;
    if (isLoaded()) {
      // the loaded model asked for again while another loads (downloading before a switch, or beside it): that load is given up, the loaded one stays
      this.loading?.controller.abort(new LoadAbortedError(`replaced by a load of ${name}, which is loaded`));
      return this.loaded!.info;
    }
    this.loading?.controller.abort(new LoadAbortedError(`replaced by a load of ${name}`));
    const controller = new AbortController();
    const byCaller = () => controller.abort(signal?.reason instanceof LoadAbortedError ? signal.reason : new LoadAbortedError('aborted by its caller'));
    if (signal?.aborted) byCaller();
    signal?.addEventListener('abort', byCaller, { once: true });
    const task = this.loadNow(source, onProgress, opts, controller.signal);
    // settled once the load has ended and its entry is cleared (below)
    let settle!: () => void;
    const entry = { controller, settled: new Promise<void>((r) => (settle = r)), source: name };
    this.loading = entry;
    try {
      return await task;
    } catch (e) {
      // not replaced by a newer load, and it leaves no model: bring back the one released for it, or say why there is none
      if (this.loading === entry && !this.loaded) this.afterFailedLoad(this.modelName(source, name), e);
      throw e;
    } finally {
      if (this.loading === entry) this.loading = null;
      if (!this.loading) this.settleHeld();
      settle();
    }
  }

  /** The id a source's model gets, or its name where the source cannot be opened. */
  private modelName(source: ModelSourceSpec | ModelFiles, name: string): string {
    try {
      return this.sourceId(source);
    } catch {
      return name;
    }
  }

  /** A load left no model: reload the model released to make room for it (its waiting requests run there), or record why none is loaded. */
  private afterFailedLoad(name: string, e: unknown): void {
    const evicted = this.evicted;
    if (evicted && this.lostReason === null) {
      this.evicted = null;
      this.loading = null;
      this.noModelReason = `${evicted.info.id} was released to make room for ${name}, whose load failed (${messageOf(e)}); ${evicted.info.id} is being loaded again`;
      this.reloadingEvicted = true;
      void this.load(evicted.source, undefined, { ...evicted.opts, onSwitch: 'finish' }).catch(() => undefined);
      return;
    }
    this.noModelReason = this.reloadingEvicted ? `${this.noModelReason}, and that failed too (${messageOf(e)})` : `the load of ${name} failed (${messageOf(e)})`;
    this.reloadingEvicted = false;
  }

  /** Once no load is under way: requests held for a model run on the one installed, or fail saying why there is none. */
  private settleHeld(): void {
    if (!this.held.length) return;
    const held = this.held.splice(0);
    if (this.interleaver) for (const s of held) this.resubmit(s);
    else for (const s of held) s.reject(this.notLoaded());
  }

  private notLoaded(): ModelNotLoadedError {
    const e = new ModelNotLoadedError();
    if (this.noModelReason) e.message = `no model is loaded: ${this.noModelReason}`;
    return e;
  }

  /** Aborts the load under way, if any; the loaded model keeps serving. */
  abortLoad(): boolean {
    if (!this.loading) return false;
    this.loading.controller.abort(new LoadAbortedError('aborted by its caller'));
    return true;
  }

  /** The source of the load under way, or null. */
  get loadingSource(): string | null {
    return this.loading?.source ?? null;
  }

  /** The id a source's model gets (cheap: opening a source fetches nothing). */
  sourceId(source: ModelSourceSpec | ModelFiles): string {
    return 'read' in source ? source.id : (this.options.openFiles ?? openModelFiles)(source).id;
  }

  private async loadNow(source: ModelSourceSpec | ModelFiles, onProgress: ProgressCallback | undefined, opts: LoadModelOptions, signal: AbortSignal): Promise<ModelInfo> {
    const opened = 'read' in source ? source : (this.options.openFiles ?? openModelFiles)(source, { token: opts.hubToken });
    const cache = this.options.fileCache;
    const cacheable = cache && isCacheable(opened) ? opened : null;
    const streaming = this.options.streaming ?? false;
    const load = (files: ModelFiles) =>
      loadModel(files, {
        ort: this.options.ort,
        backend: this.options.backend,
        onProgress,
        signal,
        streamExternalData: streaming,
        native: this.options.native,
        webgpuDevice: this.options.webgpuDevice,
        deviceResident: this.options.backend === 'webgpu' && this.options.webgpuDevice != null && (opts.denoiseOnDevice ?? this.options.denoiseOnDevice ?? true),
        ...opts,
        // a streamed file is never one buffer: only memory limits what loads
        fit: { ...(streaming ? { maxFileBytes: Infinity } : {}), ...this.options.deviceFit, ...opts.fit },
        // the plan is known, no session made yet: make room for it beside (or instead of) the models resident
        beforeSessions: (plan: ModelPlan, storeFiles: () => Promise<void>) => this.makeRoom(plan, token, opts, signal, storeFiles),
      });
    // this load's entry in the memory ledger, from its first session until it is installed (or fails)
    const token = {};
    let next: LoadedModel;
    try {
      if (!cacheable) next = await load(opened);
      else {
        const files = new CachedModelFiles(cacheable, cache!);
        try {
          next = await load(files);
        } catch (e) {
          // the file that failed came from the cache and may have rotted on disk: check its hash, and if it was bad, fetch it again once
          if (!(e instanceof ModelLoadError) || !files.hits.has(e.file) || !(await cache!.verify(files.id, [cacheable.cacheKey(e.file)])).dropped.length) throw e;
          next = await load(new CachedModelFiles(cacheable, cache!));
        }
      }
      if (signal.aborted) {
        await next.release();
        throw signal.reason;
      }
    } catch (e) {
      // a failed load has released what it made
      this.ledger.remove(token);
      // refused before anything was made or released: say which model, and that the loaded one keeps serving
      if (e instanceof ModelTooLargeError) e.nameModel(opened.id, this.loaded ? ` The loaded model, ${this.loaded.info.id}, keeps serving.` : '');
      throw e;
    }
    const previous = this.loaded;
    const old = this.interleaver;
    this.ledger.remove(token);
    this.ledger.set(next, { id: next.info.id, weightBytes: next.info.weightBytes, state: 'loaded' });
    this.loaded = next;
    this.loadedSource = { source, opts };
    this.evicted = null;
    this.noModelReason = null;
    this.reloadingEvicted = false;
    this.loadedKey = loadKey(sourceKey(source, opened.id), opts, this.options.backend, this.options.deviceFit);
    const { maxActive, maxBatch, encodePng, encodeInline, renderPreview, gpuLoss, lossReportMs } = this.options;
    const denoiser = next.deviceResident ? new WebGpuDenoiser(this.options.webgpuDevice as GPUDevice, next, this.options.ort) : new HostDenoiser(next, this.options.ort);
    this.interleaver = new Interleaver(next, this.options.ort, { maxActive: maxActive ?? DEFAULT_MAX_ACTIVE, maxBatch: maxBatch ?? DEFAULT_MAX_BATCH, encodePng, encodeInline, renderPreview, gpuLoss, lossReportMs }, this.counters, denoiser);
    if (old && previous) {
      // nothing accepted is lost to a switch: queued requests (and running ones, when asked) start again from
      // their seed on the new model, the rest finish on the old one, which is released only after them
      const moved = [...old.takeQueued(), ...(opts.onSwitch === 'rerun' ? old.takeActive() : [])];
      for (const scope of moved) this.resubmit(scope);
      // the new model serves at once; the old one is released when its last request ends
      this.retire(previous, old);
    }
    // requests held while the old model made room run here, in the order they came
    for (const scope of this.held.splice(0)) this.resubmit(scope);
    return next.info;
  }

  /** A replaced model is released once its last request ends; it counts in the ledger until then. */
  private retire(model: LoadedModel, il: Interleaver): void {
    this.draining.add(il);
    this.ledger.mark(model, 'draining');
    this.retiring = this.retiring
      .then(() => il.idle())
      .finally(async () => {
        this.draining.delete(il);
        try {
          await model.release();
          await this.flushDevice();
        } finally {
          this.ledger.remove(model);
        }
      })
      .catch(() => undefined); // a release that fails leaves nothing for a caller to act on
  }

  /** On WebGPU, has onnxruntime really free the buffers of sessions released so far (see FLUSH_GRAPH); a no-op on wasm. */
  private async flushDevice(): Promise<void> {
    const { ort, backend, webgpuDevice, native } = this.options;
    if (backend !== 'webgpu' || native) return;
    await deviceQueue(ort)
      .run(async () => {
        const session = await ort.InferenceSession.create(FLUSH_GRAPH, { executionProviders: [webgpuDevice != null ? ({ name: 'webgpu', device: webgpuDevice } as { name: 'webgpu' }) : 'webgpu'] });
        try {
          await session.run({ x: new ort.Tensor('float32', new Float32Array(4), [4]) });
        } finally {
          await session.release();
        }
      }, 'release buffers')
      .catch(() => undefined); // memory freed later, at the next run: nothing for a caller to act on
  }

  /** Bytes the device holds now: every resident model's weights and the requests admitted on them. */
  private residentBytes(): number {
    return this.ledger.weightBytes + [this.interleaver, ...this.draining].reduce((n, il) => n + (il?.admittedBytes ?? 0), 0);
  }

  /**
   * Called once a load's plan is known, before its first session: a model that
   * fits beside every resident one loads at once (the old one keeps serving);
   * one that does not is downloaded first (into the cache, where the source
   * has one) while the old model serves, then waits until the old model has
   * stopped taking work, ended (or handed over) its running requests and been
   * released.
   */
  private async makeRoom(plan: ModelPlan, token: object, opts: LoadModelOptions, signal: AbortSignal, storeFiles: () => Promise<void>): Promise<void> {
    this.ledger.remove(token); // a second attempt (a file fetched again) plans again
    const need = modelNeedBytes(plan.budget, smallestRequestBytes(plan.dims, plan.limits.minSize));
    const resident = this.residentBytes();
    const sequential = resident + need > plan.budget.memoryBytes && (this.loaded !== null || this.draining.size > 0);
    const order = { model: plan.id, order: sequential ? 'release-first' : 'beside', residentBytes: resident, needBytes: need, budgetBytes: plan.budget.memoryBytes } as const;
    if (sequential) {
      await storeFiles();
      signal.throwIfAborted();
    }
    // recorded once it happens: a download that fails (or a load aborted during it) switched nothing
    this.lastSwitch = order;
    if (sequential) {
      this.vacate(opts.onSwitch ?? 'finish', plan);
      let retiring: Promise<void>;
      do {
        retiring = this.retiring;
        await Promise.race([retiring, aborted(signal)]);
        signal.throwIfAborted();
      } while (retiring !== this.retiring);
    }
    this.ledger.set(token, { id: plan.id, weightBytes: plan.budget.weightBytes, state: 'loading' });
  }

  /** The loaded model takes no more work: its queued (and with 'rerun', running) requests wait for the next model, and it is released once the rest end. */
  private vacate(onSwitch: 'finish' | 'rerun', plan: ModelPlan): void {
    const model = this.loaded;
    const il = this.interleaver;
    if (!model || !il) return;
    this.held.push(...il.takeQueued(), ...(onSwitch === 'rerun' ? il.takeActive() : []));
    this.evicted = this.loadedSource ? { ...this.loadedSource, info: model.info } : null;
    this.noModelReason = `${model.info.id} was released to make room for ${plan.id}, which is loading (${formatBytes(model.info.weightBytes)} + ${formatBytes(plan.budget.weightBytes)} of weights do not fit ${formatBytes(plan.budget.memoryBytes)} together)`;
    this.loaded = null;
    this.interleaver = null;
    this.loadedKey = null;
    this.retire(model, il);
  }

  async unload(): Promise<void> {
    for (const s of this.held.splice(0)) this.cancelHeld(s);
    for (const il of [this.interleaver, ...this.draining]) if (il) for (const id of il.ids()) il.cancel(id);
    await this.idle();
    if (this.loaded) {
      await this.loaded.release();
      await this.flushDevice();
      this.ledger.remove(this.loaded);
    }
    this.loaded = null;
    this.loadedSource = null;
    this.loadedKey = null;
    this.interleaver = null;
  }

  /** A request taken off a replaced model runs on the current one; its caller's promise follows the new run. */
  private resubmit(scope: RequestScope): void {
    this.submit(scope.request, { onProgress: scope.onProgress, preview: scope.wantsPreview, normalized: true }).then(
      (r) => scope.resolve(r),
      (e) => scope.reject(e),
    );
  }

  /**
   * Checks a request and fills in every default (a random seed included), so
   * the result can be stored and replayed to give the same image.
   */
  normalize(request: unknown): NormalizedRequest {
    // while a switch has released the old model, requests are checked against it, as during any switch
    const info = this.loaded?.info ?? this.evicted?.info;
    if (!info) throw this.notLoaded();
    return normalizeRequest(request, info, newId, randomSeed);
  }

  /**
   * Validates and queues a request; resolves with the image. Bad input is
   * refused before anything is queued, so requests in flight are untouched.
   * During a model load the request waits for the load and runs on its model
   * (the previous one, if the load fails); it can be cancelled meanwhile.
   */
  generate(request: unknown, opts: GenerateOptions = {}): Promise<GenerateResult> {
    if (!this.loading) return this.submit(request, opts);
    const later = (async () => {
      while (this.loading) {
        await Promise.race([this.loading.settled, aborted(opts.signal)]);
        opts.signal?.throwIfAborted();
      }
      return this.submit(request, opts);
    })();
    // as for every request: a caller that drops the promise (after a cancel) never sees an unhandled rejection
    later.catch(() => undefined);
    return later;
  }

  private submit(request: unknown, opts: GenerateOptions): Promise<GenerateResult> {
    try {
      const { loaded: model, interleaver } = this;
      if (this.lostReason !== null) throw new DeviceLostError(this.lostReason);
      if (!model || !interleaver) throw this.notLoaded();
      // a request normalized earlier (stored by the worker, or moved by a switch) is checked again against the model that runs it
      const req = opts.normalized ? renormalizeRequest(request as NormalizedRequest, model.info) : this.normalize(request);
      if (interleaver.has(req.id)) throw new InvalidRequestError('id', 'an id not used by a queued or running request', req.id);
      const { transformerConfig: t, vaeConfig: vae } = model;
      const lh = req.height / vae.scaleFactor;
      const lw = req.width / vae.scaleFactor;
      const schedule = model.scheduler.retrieveTimesteps({ steps: req.steps, imageSeqLen: (lh / t.patchSize) * (lw / t.patchSize) });
      // image to image starts part-way down the schedule (get_timesteps); text to image at its top
      const scheduler = RequestSchedulerState.startingAt(schedule, req.image ? strengthStart(req.steps, req.strength!) : 0);
      // the image and mask decoded and preprocessed now: a bad file is refused before anything is queued
      const input = prepareImageInput(req, lw, lh);
      // the whole-image decode when it fits, else VAE tiles that do
      const kind = !input ? 'text' : input.latentMask ? 'inpaint' : 'image';
      const footprint = fitRequest(model.budget, model.dims, req.width, req.height, req.guidance, kind);
      const scope = new RequestScope(req, scheduler, footprint, [vae.latentChannels, lh, lw], opts.onProgress, opts.preview ?? false, performance.now(), input);
      if (opts.signal?.aborted) throw opts.signal.reason ?? new DOMException('aborted', 'AbortError');
      // through the engine, not this interleaver: after a switch the request may run on another one
      opts.signal?.addEventListener('abort', () => this.cancel(req.id), { once: true });
      return interleaver.submit(scope);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Cancels a queued or running request; false if no such request is in flight. */
  cancel(id: string): boolean {
    if (this.interleaver?.cancel(id)) return true;
    for (const il of this.draining) if (il.cancel(id)) return true;
    const i = this.held.findIndex((s) => s.id === id);
    if (i < 0) return false;
    this.cancelHeld(this.held.splice(i, 1)[0]);
    return true;
  }

  private cancelHeld(scope: RequestScope): void {
    this.counters.cancelled++;
    scope.reject(new CancelledError(scope.id));
  }

  /**
   * The GPU device is gone. onnxruntime-web binds its WebGPU backend to one
   * device for the module's life, so this engine cannot continue: every
   * queued and running request ends with DeviceLostError (their tensors
   * freed), new ones are refused, and status() says why. The host starts a
   * fresh engine (the worker restarts) and replays unfinished requests from
   * their seeds, which gives the same images.
   */
  deviceLost(reason: string): number {
    this.lostReason = reason;
    let ended = this.interleaver?.failAll(() => new DeviceLostError(reason)) ?? 0;
    for (const il of this.draining) ended += il.failAll(() => new DeviceLostError(reason));
    for (const s of this.held.splice(0)) {
      this.counters.failed++;
      s.reject(new DeviceLostError(reason));
      ended++;
    }
    return ended;
  }

  /** Resolves once every queued and running request has ended. */
  async idle(): Promise<void> {
    await Promise.all([this.interleaver?.idle(), this.retiring]);
  }

  status(): EngineStatus {
    const il = this.interleaver;
    return {
      model: this.loaded?.info ?? null,
      backend: this.loaded ? this.options.backend : null,
      adapter: this.options.adapter ?? null,
      runtime: this.options.runtimeStatus ?? null,
      requestsServed: this.counters.served,
      requestsFailed: this.counters.failed,
      requestsCancelled: this.counters.cancelled,
      requestsActive: [il, ...this.draining].reduce((n, x) => n + (x?.activeCount ?? 0), 0),
      requestsQueued: (il?.queuedCount ?? 0) + this.held.length,
      weightBytes: this.loaded?.info.weightBytes ?? 0,
      requestBytes: [il, ...this.draining].reduce((n, x) => n + (x?.requestBytes ?? 0), 0),
      admittedBytes: [il, ...this.draining].reduce((n, x) => n + (x?.admittedBytes ?? 0), 0),
      requestBudgetBytes: il?.budgetBytes ?? 0,
      peakAdmittedBytes: this.counters.peakAdmittedBytes,
      cycles: this.counters.cycles,
      maxRowsPerRun: this.counters.maxRowsPerRun,
      deviceLost: this.lostReason,
      denoise: this.denoiseStatus(),
      memory: {
        budgetBytes: this.loaded?.budget.memoryBytes ?? defaultDeviceFit(this.options.backend, this.options.deviceFit).memoryBytes,
        residentWeightBytes: this.ledger.weightBytes,
        admittedBytes: [il, ...this.draining].reduce((n, x) => n + (x?.admittedBytes ?? 0), 0),
        models: this.ledger.residents,
        lastLoad: this.lastSwitch,
      },
      noModelReason: this.loaded ? null : this.noModelReason,
      // per-stage times and the transformer's FLOP rate (stage-timing.ts), against the adapter's peak for the model's precision
      stages: this.counters.stages.snapshot(this.options.adapter, this.loaded?.dims.transformerBytes === 2 ? 'fp16' : 'fp32'),
    };
  }

  private denoiseStatus(): EngineStatus['denoise'] {
    const m = this.loaded;
    const d = this.interleaver?.denoiser;
    if (!m || !d) return null;
    const sessions = [m.clipL.session, m.clipG.session, m.t5?.session, m.transformer, m.vaeDecoder, m.vaeEncoder ?? undefined].filter((x) => x !== undefined);
    return {
      residency: d.residency,
      liveDeviceTensors: d.liveTensors,
      uploadBytes: d.transfers.uploadBytes + sessions.reduce((n, x) => n + x.transfers.uploadBytes, 0),
      downloadBytes: d.transfers.downloadBytes + sessions.reduce((n, x) => n + x.transfers.downloadBytes, 0),
    };
  }
}
