// The worker's API: the browser form of the seed server's endpoints
// (inference, image by id, status), exposed over Comlink by engine.worker.ts.
// Every accepted request goes into IndexedDB's durable queue before it runs;
// its image replaces it there when done. Progress callbacks arrive as Comlink
// proxies; preview pixels are transferred, PNGs travel as Blobs.
import * as Comlink from 'comlink';
import type { BackendName, EngineStatus, ImageMetadata, JobState, ModelInfo, ModelSourceSpec, ProgressCallback, ProgressEvent, RequestRecord, RequestState } from './engine/api/types.ts';
import type { NormalizedRequest } from './engine/api/validate.ts';
import type { Engine, LoadModelOptions } from './engine/engine.ts';
import type { CachedModelUsage } from './engine/model/file-cache.ts';
import { AttemptsExhaustedError, CancelledError, ModelNotLoadedError, NotFoundError } from './engine/errors.ts';
import { checkTransformerOnBackends, type BackendCheck } from './backend-check.ts';
import { createBrowserEngine, gpuDeviceLost, gpuMemory, type GpuInfo } from './browser-engine.ts';
import { deviceQueue } from './engine/model/run-queue.ts';
import { resetGpuPeak, type GpuMemory } from './gpu-memory.ts';
import { ImageStore, StorageError, type ImageQuery, type InputFile, type QueuedRequest, type StoredImage, type StoredLoadOptions } from './store/image-store.ts';

export interface WorkerStatus extends EngineStatus {
  /** Images made but not yet stored (storage full): they are stored when room returns. */
  unsaved: string[];
  gpu: GpuInfo | null;
  /** GPU buffers on the engine's device (WebGPU only): what the GPU really holds. */
  gpuMemory: GpuMemory | null;
}

/** One reply per finished image: its file and its settings (no second round trip to fetch them). */
export interface GenerateReply {
  id: string;
  metadata: ImageMetadata;
  png: Blob;
  /** False when storage refused it (full): the worker keeps it and stores it when room returns; status().unsaved lists it until then. */
  stored: boolean;
  storageError?: string;
}

/** Runs a request may start: the first, and one replay after the engine went down under it (a crash, a lost device). */
export const MAX_ATTEMPTS = 2;

type RegistryEntry = RequestRecord & { ctl: AbortController };

/** The engine's phases as the registry names them. */
const REGISTRY_STATE: Record<JobState, RequestState> = {
  queued: 'queued',
  encoding: 'running',
  denoising: 'running',
  decoding: 'running',
  saving: 'saving',
  done: 'done',
  cancelled: 'cancelled',
  failed: 'failed',
};

/** The worker's heartbeat: sent every second, and at once when a device call starts or ends, so a
 * call that blocks the worker for minutes (a big model on wasm) is announced before it blocks. */
export interface Beat {
  /** The device call under way, how long it has run, and how long the last one like it took. */
  busy: { what: string; sinceMs: number; expectedMs: number | null } | null;
}

export const BEAT_INTERVAL_MS = 1000;

/** A rejection as it crosses the worker boundary: a plain object, because Comlink
 * keeps only message/name/stack of Error instances, and the UI needs code and field. */
export interface WireError {
  name: string;
  code?: string;
  message: string;
  field?: string;
  file?: string;
}

function wireError(e: unknown): WireError {
  if (e && typeof e === 'object' && 'toJSON' in e && typeof (e as { toJSON: unknown }).toJSON === 'function') {
    return (e as { toJSON(): WireError }).toJSON();
  }
  return e instanceof Error ? { name: e.name, message: e.message } : { name: 'Error', message: String(e) };
}

async function guard<T>(f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    throw wireError(e);
  }
}

/** Moves the preview's pixels instead of copying them. */
function transferProgress(onProgress?: ProgressCallback): ProgressCallback | undefined {
  if (!onProgress) return undefined;
  return (event: ProgressEvent) => {
    const buffers = event.preview ? [event.preview.rgba.buffer as ArrayBuffer] : [];
    void onProgress(Comlink.transfer(event, buffers));
  };
}

export class WorkerApi {
  protected engine: Engine | null = null;
  private gpu: GpuInfo | null = null;
  private starting: Promise<void> | null = null;
  private readonly store = ImageStore.open();
  private onBeat: ((b: Beat) => void) | null = null;
  private busy: { what: string; since: number; expectedMs: number | null } | null = null;

  /**
   * Detects WebGPU (or uses wasm: forced, or as the fallback) and creates the engine; `onBeat` hears the heartbeat.
   * `onBeat` is its own argument because Comlink proxies only top-level arguments: nested in `opts` it would be cloned.
   */
  async init(opts: { backend?: BackendName } = {}, onBeat?: (b: Beat) => void): Promise<GpuInfo> {
    return guard(async () => {
      if (onBeat && !this.onBeat) {
        this.onBeat = onBeat;
        setInterval(() => this.beat(), BEAT_INTERVAL_MS);
      }
      this.starting ??= createBrowserEngine({ backend: opts.backend }).then(({ engine, gpu }) => {
        this.engine = engine;
        this.gpu = { ...gpu, backend: engine.options.backend };
        deviceQueue(engine.options.ort).observe((e) => {
          this.busy = e.phase === 'start' ? { what: e.label, since: performance.now(), expectedMs: e.ms } : null;
          this.beat();
        });
      });
      await this.starting;
      return this.gpu!;
    });
  }

  private beat(): void {
    const b = this.busy;
    void this.onBeat?.({ busy: b && { what: b.what, sinceMs: performance.now() - b.since, expectedMs: b.expectedMs } });
  }

  private async ready(): Promise<Engine> {
    await this.init();
    return this.engine!;
  }

  /** Loads a model (downloads go through the cache); the previous one keeps serving if this fails.
   * Requests sent meanwhile wait for it; a newer load, or abortLoad(), aborts it. Loading the model
   * already loaded is a no-op; a switch lets running requests finish (or re-runs them: onSwitch). */
  async loadModel(source: ModelSourceSpec, onProgress?: ProgressCallback, opts: LoadModelOptions = {}): Promise<ModelInfo> {
    return guard(async () => {
      const engine = await this.ready();
      // what requests accepted from now on record, so a reload can load their model again (never the token):
      // requests sent during the load run on the model it loads
      const { skipT5, t5MaxLength, fit } = opts;
      const target = { id: engine.sourceId(source), source, loadOptions: { skipT5, t5MaxLength, fit } };
      const previous = this.current;
      this.current = target;
      try {
        const info = await engine.load(source, onProgress, opts);
        if (this.current === target) this.current = { ...target, id: info.id };
        return info;
      } catch (e) {
        // a failed or aborted load leaves the previous model serving
        if (this.current === target) this.current = previous;
        throw e;
      }
    });
  }

  /** Aborts the model load under way: its downloads stop, the loaded model keeps serving. */
  async abortLoad(): Promise<boolean> {
    return guard(async () => (await this.ready()).abortLoad());
  }

  /** Space the download cache uses, per model. */
  async cachedModels(): Promise<CachedModelUsage[]> {
    return guard(async () => (await this.ready()).options.fileCache?.usage() ?? []);
  }

  /** Deletes one model's cached files; resolves with the bytes freed. */
  async deleteCachedModel(modelId: string): Promise<number> {
    return guard(async () => (await this.ready()).options.fileCache?.deleteModel(modelId) ?? 0);
  }

  /** Requests cancelled while in the durable queue but not (yet) resumed: a resume that reaches one ends it cancelled. */
  private readonly cancelledUnresumed = new Set<string>();

  /** The loaded model as requests record it. */
  private current: { id: string; source: ModelSourceSpec; loadOptions: StoredLoadOptions } | null = null;

  /** Every accepted request until it ends: the one place its state is kept (the durable queue is its persisted form). */
  private readonly registry = new Map<string, RegistryEntry>();

  /** Images made but not stored (storage full): kept here, in the reply, and stored when room returns. */
  /** Images storage refused (full), with their input files: stored when room returns. */
  private readonly unsaved = new Map<string, { image: StoredImage; inputs: InputFile[] }>();
  private storeRetry: ReturnType<typeof setTimeout> | null = null;

  /** Test builds crash the worker here for chosen requests (a request that takes the engine down each time). */
  protected beforeRun(_req: NormalizedRequest): void {}

  /**
   * Accepts a request (bad input is refused here, naming the field), records it
   * in the durable queue, runs it and stores the image.
   */
  async generate(request: unknown, onProgress?: ProgressCallback, opts: { preview?: boolean } = {}): Promise<GenerateReply> {
    return guard(async () => {
      const engine = await this.ready();
      if ((!engine.model && !engine.loadingSource) || !this.current) throw new ModelNotLoadedError();
      const req = engine.normalize(request);
      const model = this.current;
      // cancellable from now on, even while it is still being written to the queue
      const entry = this.track(req.id, model.id, 1);
      const store = await this.store;
      try {
        await store.enqueue({ id: req.id, request: req, modelId: model.id, acceptedAt: new Date().toISOString(), source: model.source, loadOptions: model.loadOptions, attempts: 1 });
      } catch (e) {
        // storage full: it still runs (a reload before it ends would lose it), and its image waits for room
        if (!(e instanceof StorageError)) {
          this.registry.delete(req.id);
          throw e;
        }
      }
      return this.run(engine, store, entry, req, onProgress, opts.preview);
    });
  }

  /** Accepted requests that have not finished (after a reload or a crash), oldest first. */
  async pending(): Promise<QueuedRequest[]> {
    return guard(async () => (await this.store).pending());
  }

  /** Requests this worker has accepted that have not ended, with their state and attempts. */
  async requests(): Promise<RequestRecord[]> {
    return [...this.registry.values()].map(({ ctl: _, ...r }) => ({ ...r, ...(this.unsaved.has(r.id) ? { unsaved: true } : {}) }));
  }

  /**
   * Runs a queued request again from its stored settings: same seed, same image. A request whose
   * earlier runs all ended with the engine gone (MAX_ATTEMPTS of them) is not run again: it fails, saying why.
   */
  async resume(id: string, onProgress?: ProgressCallback, opts: { preview?: boolean } = {}): Promise<GenerateReply> {
    return guard(async () => {
      const engine = await this.ready();
      if (!engine.model && !engine.loadingSource) throw new ModelNotLoadedError(); // a switch that released its old model first: the load under way takes it
      const store = await this.store;
      const queued = (await store.pending()).find((q) => q.id === id);
      // cancelled while this resume read the queue: it stays out of the queue and never runs
      if (this.cancelledUnresumed.delete(id)) {
        if (queued) await store.dequeue(id);
        throw new CancelledError(id);
      }
      if (!queued) throw new NotFoundError('queued request', id);
      const attempts = queued.attempts ?? 1;
      if (attempts >= MAX_ATTEMPTS) {
        await store.dequeue(id);
        throw new AttemptsExhaustedError(attempts);
      }
      const entry = this.track(id, queued.modelId, attempts + 1);
      await store.enqueue({ ...queued, attempts: attempts + 1 });
      return this.run(engine, store, entry, queued.request, onProgress, opts.preview);
    });
  }

  private track(id: string, modelId: string, attempts: number): RegistryEntry {
    const entry: RegistryEntry = { id, modelId, attempts, state: 'accepted', ctl: new AbortController() };
    this.registry.set(id, entry);
    return entry;
  }

  private async run(engine: Engine, store: ImageStore, entry: RegistryEntry, req: NormalizedRequest, onProgress?: ProgressCallback, preview?: boolean): Promise<GenerateReply> {
    let result;
    try {
      entry.ctl.signal.throwIfAborted(); // cancelled while it was being written to the queue
      if (engine.loadingSource) entry.state = 'waiting-for-model';
      this.beforeRun(req);
      const relay = transferProgress(onProgress);
      result = await engine.generate(req, {
        onProgress: (e) => {
          if (e.state) entry.state = REGISTRY_STATE[e.state];
          relay?.(e);
        },
        preview,
        signal: entry.ctl.signal,
        normalized: true,
      });
    } catch (e) {
      this.registry.delete(entry.id);
      // a cancelled or failed request leaves the queue; only unfinished work is replayed. A loss the browser
      // reports after the failed call still comes back as device_lost: the engine waits for the device's word first
      if ((e as { code?: string }).code !== 'device_lost' && gpuDeviceLost() === null) await store.dequeue(req.id);
      throw e;
    }
    entry.state = 'saving';
    const image = { id: result.id, png: result.png, metadata: result.metadata };
    const inputs = inputFiles(req, result.metadata);
    try {
      await store.complete(image, inputs);
    } catch (e) {
      if (!(e instanceof StorageError)) {
        this.registry.delete(entry.id);
        throw e;
      }
      // never dropped: the page shows it and offers it for download; it is stored when room returns
      this.unsaved.set(image.id, { image, inputs });
      this.retryStoring();
      return { ...image, stored: false, storageError: e.message };
    }
    this.registry.delete(entry.id);
    void this.storeUnsaved(); // room now: earlier unsaved images may fit too
    return { ...image, stored: true };
  }

  /** Tries the unsaved images again on a backoff (5 s, then up to a minute) until every one is stored. */
  private retryStoring(delayMs = 5000): void {
    if (this.storeRetry) return;
    this.storeRetry = setTimeout(async () => {
      this.storeRetry = null;
      if (!(await this.storeUnsaved())) this.retryStoring(Math.min(delayMs * 2, 60_000));
    }, delayMs);
  }

  /** Stores what storage refused before; true when none is left. */
  private async storeUnsaved(): Promise<boolean> {
    const store = await this.store;
    for (const [id, { image, inputs }] of this.unsaved) {
      try {
        await store.complete(image, inputs);
      } catch {
        return false;
      }
      this.unsaved.delete(id);
      this.registry.delete(id);
    }
    return true;
  }

  /** Cancels a request in any state before its image is being stored; false when it is too late or unknown. */
  async cancel(id: string): Promise<boolean> {
    return guard(async () => {
      const entry = this.registry.get(id);
      if (!entry) {
        // queued before a reload, not running now; a resume of it already under way (past its own
        // read of the queue) must not put it back and run it: it sees this mark and ends cancelled
        this.cancelledUnresumed.add(id);
        await (await this.store).dequeue(id);
        return false;
      }
      if (entry.state === 'saving' || entry.state === 'done') return false; // made: its image is being stored
      // in the engine's queue or step loop: the engine ends it now
      if (this.engine?.cancel(id)) {
        entry.ctl.abort(new CancelledError(id));
        return true;
      }
      // not in the engine yet (being written to the queue, waiting for a model): it never starts
      if (entry.state === 'accepted' || entry.state === 'waiting-for-model') {
        entry.ctl.abort(new CancelledError(id));
        return true;
      }
      return false; // past the step loop: its image is being made into a file
    });
  }

  async getImage(id: string): Promise<StoredImage> {
    return guard(async () => (await this.store).get(id));
  }

  /** An image request's input file (init image or mask) by the SHA-256 its image's metadata names: to make it again, or use it again. */
  async getInputImage(sha256: string): Promise<Blob> {
    return guard(async () => {
      for (const { inputs } of this.unsaved.values()) for (const f of inputs) if (f.sha256 === sha256) return f.png;
      return (await this.store).input(sha256);
    });
  }

  /** The settings in a dropped, pasted or opened PNG: read here, off the page's thread, each text chunk capped at 1 MB. */
  async readPngSettings(png: Blob): Promise<import('./engine/png/settings-chunks.ts').ReadSettings> {
    return guard(async () => (await import('./read-png.ts')).readPngBlob(png));
  }

  async listImages(query: ImageQuery = {}): Promise<ImageMetadata[]> {
    return guard(async () => (await this.store).list(query));
  }

  async deleteImage(id: string): Promise<void> {
    return guard(async () => (await this.store).delete(id));
  }

  /** Wipes every stored image, queued request and cached model file. */
  async deleteAllData(): Promise<void> {
    for (const [id, { ctl }] of this.registry) ctl.abort(new CancelledError(id));
    this.unsaved.clear();
    await (await this.store).clear();
    await this.engine?.options.fileCache?.clear();
  }

  async status(): Promise<WorkerStatus> {
    const m = gpuMemory();
    return { ...(this.engine?.status() ?? emptyStatus()), unsaved: [...this.unsaved.keys()], gpu: this.gpu, gpuMemory: m && { ...m } };
  }

  /** Starts a new GPU memory peak from what is live now (the benchmark measures one run at a time). */
  async resetGpuMemoryPeak(): Promise<void> {
    const m = gpuMemory();
    if (m) resetGpuPeak(m);
  }

  /** Diagnostic: the tiny transformer on webgpu vs wasm, same inputs. */
  async checkBackends(modelUrl: string): Promise<BackendCheck> {
    return guard(async () => {
      const gpu = await this.init();
      if (!gpu.limits.maxBufferSize) throw new Error(`WebGPU is unavailable here: ${gpu.fallbackReason}`);
      return checkTransformerOnBackends(modelUrl);
    });
  }
}

function emptyStatus(): EngineStatus {
  return {
    model: null,
    backend: null,
    adapter: null,
    requestsServed: 0,
    requestsFailed: 0,
    requestsCancelled: 0,
    requestsActive: 0,
    requestsQueued: 0,
    weightBytes: 0,
    requestBytes: 0,
    admittedBytes: 0,
    requestBudgetBytes: 0,
    peakAdmittedBytes: 0,
    cycles: 0,
    maxRowsPerRun: 0,
    deviceLost: null,
    denoise: null,
  };
}

/** A finished request's input files, by the hashes its metadata records. */
function inputFiles(req: NormalizedRequest, m: ImageMetadata): InputFile[] {
  const files: InputFile[] = [];
  if (req.image && m.image) files.push({ sha256: m.image.sha256, png: new Blob([req.image as Uint8Array<ArrayBuffer>], { type: 'image/png' }) });
  if (req.mask && m.mask) files.push({ sha256: m.mask.sha256, png: new Blob([req.mask as Uint8Array<ArrayBuffer>], { type: 'image/png' }) });
  return files;
}
