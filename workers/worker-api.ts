// The worker's API: the browser form of the seed server's endpoints
// (inference, image by id, status), exposed over Comlink by engine.worker.ts.
// Every accepted request goes into IndexedDB's durable queue before it runs;
// its image replaces it there when done. Progress callbacks arrive as Comlink
// proxies; preview pixels are transferred, PNGs travel as Blobs.
import * as Comlink from 'comlink';
import type { BackendName, EngineStatus, ImageMetadata, ModelInfo, ModelSourceSpec, ProgressCallback, ProgressEvent } from './engine/api/types.ts';
import type { Engine, LoadModelOptions } from './engine/engine.ts';
import type { CachedModelUsage } from './engine/model/file-cache.ts';
import { CancelledError, ModelNotLoadedError } from './engine/errors.ts';
import { checkTransformerOnBackends, type BackendCheck } from './backend-check.ts';
import { createBrowserEngine, gpuDeviceLost, gpuMemory, type GpuInfo } from './browser-engine.ts';
import { deviceQueue } from './engine/model/run-queue.ts';
import { resetGpuPeak, type GpuMemory } from './gpu-memory.ts';
import { ImageStore, type ImageQuery, type QueuedRequest, type StoredImage } from './store/image-store.ts';

export interface WorkerStatus extends EngineStatus {
  gpu: GpuInfo | null;
  /** GPU buffers on the engine's device (WebGPU only): what the GPU really holds. */
  gpuMemory: GpuMemory | null;
}

/** One reply per finished image: its file and its settings (no second round trip to fetch them). */
export interface GenerateReply {
  id: string;
  metadata: ImageMetadata;
  png: Blob;
}

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
   * Requests sent meanwhile wait for it; a newer load, or abortLoad(), aborts it. */
  async loadModel(source: ModelSourceSpec, onProgress?: ProgressCallback, opts: LoadModelOptions = {}): Promise<ModelInfo> {
    return guard(async () => (await this.ready()).load(source, onProgress, opts));
  }

  /** Aborts the model load under way: its downloads stop, the loaded model keeps serving. */
  async abortLoad(): Promise<boolean> {
    return (await this.ready()).abortLoad();
  }

  /** Space the download cache uses, per model. */
  async cachedModels(): Promise<CachedModelUsage[]> {
    return guard(async () => (await this.ready()).options.fileCache?.usage() ?? []);
  }

  /** Deletes one model's cached files; resolves with the bytes freed. */
  async deleteCachedModel(modelId: string): Promise<number> {
    return guard(async () => (await this.ready()).options.fileCache?.deleteModel(modelId) ?? 0);
  }

  /**
   * Accepts a request (bad input is refused here, naming the field), records it
   * in the durable queue, runs it and stores the image. Resolves with its id.
   */
  async generate(request: unknown, onProgress?: ProgressCallback, opts: { preview?: boolean } = {}): Promise<GenerateReply> {
    return guard(async () => {
      const engine = await this.ready();
      if (!engine.model) throw new ModelNotLoadedError();
      const req = engine.normalize(request);
      // cancellable from now on, even while it is still being written to the queue
      return this.cancellable(req.id, async (signal) => {
        const store = await this.store;
        await store.enqueue({ id: req.id, request: req, modelId: engine.model!.info.id, acceptedAt: new Date().toISOString() });
        return this.run(engine, store, req, onProgress, opts.preview, signal);
      });
    });
  }

  /** Accepted requests until they end: how to stop them, and whether the engine has them yet. */
  private readonly inFlight = new Map<string, { ctl: AbortController; submitted: boolean }>();

  private async cancellable<T>(id: string, f: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const entry = { ctl: new AbortController(), submitted: false };
    this.inFlight.set(id, entry);
    try {
      return await f(entry.ctl.signal);
    } finally {
      if (this.inFlight.get(id) === entry) this.inFlight.delete(id);
    }
  }

  /** Accepted requests that have not finished (after a reload or a crash), oldest first. */
  async pending(): Promise<QueuedRequest[]> {
    return (await this.store).pending();
  }

  /** Runs a queued request again from its stored settings: same seed, same image. */
  async resume(id: string, onProgress?: ProgressCallback, opts: { preview?: boolean } = {}): Promise<GenerateReply> {
    return guard(async () => {
      const engine = await this.ready();
      if (!engine.model) throw new ModelNotLoadedError();
      const store = await this.store;
      const entry = (await store.pending()).find((q) => q.id === id);
      if (!entry) throw new Error(`no queued request ${id}`);
      return this.cancellable(id, (signal) => this.run(engine, store, entry.request, onProgress, opts.preview, signal));
    });
  }

  private async run(engine: Engine, store: ImageStore, req: QueuedRequest['request'], onProgress?: ProgressCallback, preview?: boolean, signal?: AbortSignal): Promise<GenerateReply> {
    let result;
    try {
      const entry = this.inFlight.get(req.id);
      if (entry) entry.submitted = true;
      result = await engine.generate(req, { onProgress: transferProgress(onProgress), preview, signal, normalized: true });
    } catch (e) {
      // a cancelled or failed request leaves the queue; only unfinished work is replayed
      // kept for replay when the device is gone, whatever error the loss surfaced as
      if ((e as { code?: string }).code !== 'device_lost' && gpuDeviceLost() === null) await store.dequeue(req.id);
      throw e;
    }
    await store.complete({ id: result.id, png: result.png, metadata: result.metadata });
    return { id: result.id, metadata: result.metadata, png: result.png };
  }

  async cancel(id: string): Promise<boolean> {
    const entry = this.inFlight.get(id);
    if (!entry) {
      await (await this.store).dequeue(id); // queued before a reload, not running now
      return false;
    }
    if (this.engine?.cancel(id)) return true; // queued or running in the engine
    if (entry.submitted) return false; // finished: its image is being stored
    entry.ctl.abort(new CancelledError(id)); // accepted, not yet in the engine: it never starts
    return true;
  }

  async getImage(id: string): Promise<StoredImage> {
    return guard(async () => (await this.store).get(id));
  }

  /** The settings in a dropped, pasted or opened PNG: read here, off the page's thread, each text chunk capped at 1 MB. */
  async readPngSettings(png: Blob): Promise<import('./engine/png/settings-chunks.ts').ReadSettings> {
    return guard(async () => (await import('./read-png.ts')).readPngBlob(png));
  }

  async listImages(query: ImageQuery = {}): Promise<ImageMetadata[]> {
    return (await this.store).list(query);
  }

  async deleteImage(id: string): Promise<void> {
    return guard(async () => (await this.store).delete(id));
  }

  /** Wipes every stored image, queued request and cached model file. */
  async deleteAllData(): Promise<void> {
    for (const [id, { ctl }] of this.inFlight) ctl.abort(new CancelledError(id));
    await (await this.store).clear();
    await this.engine?.options.fileCache?.clear();
  }

  async status(): Promise<WorkerStatus> {
    const m = gpuMemory();
    return { ...(this.engine?.status() ?? emptyStatus()), gpu: this.gpu, gpuMemory: m && { ...m } };
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
    budgetBytes: 0,
    peakAdmittedBytes: 0,
    cycles: 0,
    maxRowsPerRun: 0,
    deviceLost: null,
    denoise: null,
  };
}
