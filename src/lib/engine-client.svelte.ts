// The engine client: the one place that knows about the worker, and the owner
// of its life. It starts the worker, loads the model, keeps the grid's jobs
// and the gallery, watches the worker's heartbeat, and restarts it after a
// crash, a lost GPU device or a hang, replaying the durable queue. The view
// renders its state and calls its methods; it restarts, watches and replays
// nothing itself (web-llm keeps this in its client library too).
//
// Liveness: the worker beats every second and announces each device call
// before it starts, with how long the last one like it took, so a step that
// legitimately blocks the worker for minutes (a big model on wasm) is waited
// for, and only silence past what the worker itself announced counts as a hang.
import * as Comlink from 'comlink';
import type { BackendName, GenerateRequest, ImageMetadata, ModelInfo, ModelSourceSpec, ProgressEvent } from '../../workers/engine/api/types.ts';
import type { GpuInfo } from '../../workers/browser-engine.ts';
import type { LoadModelOptions } from '../../workers/engine/engine.ts';
import type { CachedModelUsage } from '../../workers/engine/model/file-cache.ts';
import type { Beat, GenerateReply, WorkerApi, WorkerStatus } from '../../workers/worker-api.ts';
import { describeError } from './format.ts';
import { GALLERY_PAGE, ImageStore, matchesQuery, type ImageQuery, type StoredImage } from '../../workers/store/image-store.ts';
import { Job, newRequestId } from './jobs.svelte.ts';

export type EngineApi = Comlink.Remote<WorkerApi>;

export interface GalleryItem {
  metadata: ImageMetadata;
  url: string;
  png: Blob;
}


/** Requests in the durable queue that wait for a model other than the loaded one. */
export interface WaitingModel {
  modelId: string;
  count: number;
  /** Where to load it from, as recorded when they were accepted (absent for requests from older versions). */
  source?: ModelSourceSpec;
  loadOptions?: LoadModelOptions;
}

/** Held by the tab that runs the engine. */
const ENGINE_LOCK = 'sd3-webgpu-engine';

/** Two sources name the same model (a picked folder's handle is compared by its name). */
const sameSource = (a: ModelSourceSpec, b: ModelSourceSpec) => JSON.stringify(a) === JSON.stringify(b);

export interface EngineClientOptions {
  /** Makes the worker (the test build adds fault injection to it). */
  spawn: () => Worker;
  /** Forces a backend (?backend=wasm); WebGPU where it exists otherwise. */
  backend?: BackendName;
  /** The model loaded at start. */
  source: ModelSourceSpec;
}

/** Silence allowed while the worker is idle: it beats every second. */
export const IDLE_SILENCE_MS = 30_000;
/** Silence allowed during a device call the worker has not made before (shader compiles, a first big step). */
export const FIRST_CALL_SILENCE_MS = 15 * 60_000;
/** During a call it has made before: a few times as long as the last one took, and never under a minute. */
export const callSilenceMs = (expectedMs: number) => Math.max(60_000, 4 * expectedMs + 30_000);

const FORM_FIELDS = new Set(['prompt', 'negativePrompt', 'seed', 'steps', 'guidance', 'width', 'height', 'request', 'image', 'mask', 'strength']);

export function spawnEngineWorker(): Worker {
  return new Worker(new URL('../../workers/engine.worker.ts', import.meta.url), { type: 'module', name: 'sd3-engine' });
}

export class EngineClient {
  gpu = $state<GpuInfo | null>(null);
  status = $state<WorkerStatus | null>(null);
  model = $state<ModelInfo | null>(null);
  loading = $state(false);
  loadProgress = $state<ProgressEvent | null>(null);
  loadError = $state('');
  banner = $state('');
  jobs = $state<Job[]>([]);
  gallery = $state<GalleryItem[]>([]);
  /** The gallery's prompt search, and whether older matches are left to show. */
  galleryText = $state('');
  galleryMore = $state(false);
  /** Gallery pages being read now (the page says so while one is). */
  galleryReads = $state(0);
  cached = $state<CachedModelUsage[]>([]);
  fieldErrors = $state<Record<string, string>>({});
  /** Restarts so far (crash, device loss, hang). */
  restarts = $state(0);
  /** Another tab of this app runs the engine: this one waits (one engine per browser, or both would replay the same queue). */
  otherTab = $state(false);
  /** Requests accepted for another model than the loaded one (after a reload or a switch): how many, and how to load theirs. */
  waiting = $state<WaitingModel[]>([]);

  /** The worker's API (the test entry hands it to the browser tests). */
  api!: EngineApi;
  private worker!: Worker;
  private source: ModelSourceSpec;
  private loadOptions: LoadModelOptions = {};
  private restarting = false;
  private lastSign = 0;
  private busy: Beat['busy'] = null;
  private readonly urls = new Map<string, string>();
  private timers: ReturnType<typeof setInterval>[] = [];
  private statusInFlight = false;
  private booting = false;
  /** The gallery reads IndexedDB from this thread, on its own connection: paging never waits
   * behind the worker, which may be busy for seconds compiling a model or running a step. */
  private images: Promise<ImageStore> | null = null;

  constructor(private readonly options: EngineClientOptions) {
    this.source = options.source;
  }

  /** Starts the worker, loads the model, shows the gallery and resumes the durable queue. */
  async start(): Promise<void> {
    // the gallery is this thread's own IndexedDB work: it shows whatever the engine is doing, or waiting for
    void this.refreshGallery();
    await this.holdEngineLock();
    // ask the browser not to evict stored images under storage pressure (best effort: it may say no)
    void navigator.storage?.persist?.().catch(() => false);
    this.connect();
    this.timers.push(setInterval(() => this.watch(), 2000));
    this.timers.push(setInterval(() => void this.pollStatus(), 500));
    await this.boot();
  }

  /** Resolves once this tab holds the engine lock, for the page's life; a second tab waits for the first to close. */
  private holdEngineLock(): Promise<void> {
    const locks = navigator.locks;
    if (!locks) return Promise.resolve();
    const forever = () => new Promise<void>(() => undefined);
    return new Promise<void>((held) => {
      void locks.request(ENGINE_LOCK, { ifAvailable: true }, (lock) => {
        if (lock) {
          held();
          return forever();
        }
        this.otherTab = true;
        this.banner = 'This app is open in another tab, which runs the engine and its queue. Use that tab, or close it: this one takes over then.';
        void locks.request(ENGINE_LOCK, () => {
          this.otherTab = false;
          this.banner = '';
          held();
          return forever();
        });
        return undefined;
      });
    });
  }

  stop(): void {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    this.worker?.terminate();
  }

  private signOfLife(): void {
    this.lastSign = performance.now();
  }

  private connect(): void {
    this.worker = this.options.spawn();
    this.api = Comlink.wrap<WorkerApi>(this.worker);
    this.signOfLife();
    this.busy = null;
    // a crashed worker is replaced, the model reloaded and the durable queue resumed
    this.worker.addEventListener('error', () => void this.restart('the engine worker crashed'));
  }

  /** Starts the engine in the worker and loads its model; false when the worker could not start the engine (the banner says why). */
  private async boot(): Promise<boolean> {
    try {
      this.gpu = await this.api.init(
        { backend: this.options.backend },
        Comlink.proxy((b: Beat) => {
          this.signOfLife();
          this.busy = b.busy;
        }),
      );
    } catch (e) {
      this.banner = describeError(e).message;
      return false;
    }
    this.booting = true;
    // pending work decides what to load: the model it was accepted for, when none of it is for ours
    const pending = await this.api.pending().catch(() => []);
    const theirs = pending.find((q) => q.source);
    const load = theirs?.source && !pending.some((q) => q.source && sameSource(q.source, this.source)) ? { source: theirs.source, opts: this.withToken(theirs.source, theirs.loadOptions ?? {}) } : { source: this.source, opts: this.loadOptions };
    // the downloaded models show at once, while the model loads (the gallery shows already: start() read it,
    // and a second read here could land after the person paged to older images and take them away)
    try {
      await Promise.all([this.load(load.source, load.opts), this.refreshCache()]);
    } finally {
      this.booting = false;
    }
    await this.resumePending(true);
    return true;
  }

  /** A Hub source loads with the token this browser keeps (the model picker's), which is never stored with requests. */
  private withToken(source: ModelSourceSpec, opts: LoadModelOptions): LoadModelOptions {
    const token = source.kind === 'hub' ? localStorage.getItem('sd3.hubToken') : null;
    return token ? { ...opts, hubToken: token } : opts;
  }

  /** Silence past what the worker announced is a hang: restart it. */
  private watch(): void {
    if (this.restarting) return;
    const silent = performance.now() - this.lastSign;
    const allowed = this.busy ? (this.busy.expectedMs === null ? FIRST_CALL_SILENCE_MS : callSilenceMs(this.busy.expectedMs)) : IDLE_SILENCE_MS;
    if (silent > allowed) void this.restart(`the engine stopped responding (${Math.round(silent / 1000)} s without a heartbeat${this.busy ? ` during ${this.busy.what}` : ''})`);
  }

  private async pollStatus(): Promise<void> {
    if (this.restarting || this.statusInFlight) return;
    this.statusInFlight = true;
    try {
      this.status = await this.api.status();
      this.signOfLife();
      // images storage refused before and the worker has stored since
      for (const j of this.jobs)
        if (j.unsaved && !this.status.unsaved.includes(j.id)) {
          j.unsaved = false;
          this.showInGallery(j);
        }
      if (this.status.deviceLost) void this.restart('the GPU device was lost');
    } catch {
      /* the worker is restarting */
    } finally {
      this.statusInFlight = false;
    }
  }

  /** A crashed, hung or device-less worker is replaced; the durable queue replays its work. */
  async restart(reason: string): Promise<void> {
    if (this.restarting) return;
    this.restarting = true;
    this.restarts++;
    this.banner = `${reason}; restarting the engine and resuming queued work…`;
    this.worker?.terminate();
    this.statusInFlight = false; // the old worker's pending call will never answer
    for (const j of this.jobs) if (j.active) j.state = 'queued';
    try {
      this.connect();
      // a failed start keeps its own reason in the banner: that is what the person can act on
      if (await this.boot()) this.banner = `${reason}; the engine restarted and resumed queued work.`;
      else this.banner = `${reason}; the engine could not start again: ${this.banner}`;
    } finally {
      this.restarting = false;
    }
  }

  /** Loads a model; requests sent meanwhile wait for it (the engine holds them). */
  async load(source: ModelSourceSpec, opts: LoadModelOptions = {}): Promise<void> {
    this.loading = true;
    this.loadError = '';
    try {
      // a block body: the callback's return value travels back to the worker and must be clonable
      this.model = await this.api.loadModel(
        source,
        Comlink.proxy((p: ProgressEvent) => {
          this.signOfLife();
          this.loadProgress = p;
        }),
        opts,
      );
      this.source = source;
      this.loadOptions = opts;
    } catch (e) {
      this.loadError = describeError(e).message;
    } finally {
      this.loading = false;
    }
    // requests that waited for this model run now (at start, boot resumes the whole queue itself)
    if (!this.booting && this.waiting.some((w) => w.modelId === this.model?.id)) await this.resumePending();
    await this.refreshCache();
  }

  /** Stops the load under way: its downloads end, the loaded model keeps serving. */
  async abortLoad(): Promise<void> {
    await this.api.abortLoad();
  }

  private cacheReads = 0;

  /** The downloaded models; a later read wins over an earlier one still answering (a stale list after "Delete all data" would stay). */
  async refreshCache(): Promise<void> {
    const n = ++this.cacheReads;
    const list = await this.api.cachedModels().catch(() => []);
    if (n === this.cacheReads) this.cached = list;
  }

  async deleteCached(modelId: string): Promise<void> {
    await this.api.deleteCachedModel(modelId);
    await this.refreshCache();
  }

  private progressFor(job: Job) {
    return Comlink.proxy((e: ProgressEvent) => {
      this.signOfLife();
      job.onProgress(e);
    });
  }

  /**
   * Requests in the durable queue: those for the loaded model run again from their stored seed (all of
   * them after a start or restart: the worker is new; otherwise only those this page is not running),
   * those for another model are listed in `waiting`, to load or discard.
   */
  private async resumePending(freshWorker = false): Promise<void> {
    const pending = await this.api.pending().catch(() => []);
    const waiting = new Map<string, WaitingModel>();
    for (const q of pending) {
      if (!this.model || q.modelId !== this.model.id) {
        const w = waiting.get(q.modelId) ?? { modelId: q.modelId, count: 0, source: q.source, loadOptions: q.loadOptions };
        w.count++;
        waiting.set(q.modelId, w);
        continue;
      }
      let job = this.jobs.find((j) => j.id === q.id);
      if (job?.active && !freshWorker) continue; // running in this worker now
      if (!job) {
        job = new Job(q.id, q.request.prompt, q.request);
        this.jobs.push(job);
      }
      job.state = 'queued';
      job.resumed = true;
      this.track(job, this.api.resume(q.id, this.progressFor(job), { preview: true }));
    }
    this.waiting = [...waiting.values()];
  }

  /** Loads the model requests wait for; they run on it. */
  async loadWaiting(modelId: string): Promise<void> {
    const w = $state.snapshot(this.waiting.find((x) => x.modelId === modelId));
    if (!w?.source) return;
    // plain objects, not the view's reactive proxies: they cross to the worker by structured clone
    await this.load(w.source, this.withToken(w.source, w.loadOptions ?? {}));
  }

  /** Drops the requests that wait for a model: they are removed from the queue and never run. */
  async discardWaiting(modelId: string): Promise<void> {
    for (const q of await this.api.pending()) if (q.modelId === modelId) await this.api.cancel(q.id);
    this.waiting = this.waiting.filter((w) => w.modelId !== modelId);
  }

  /** Cancels every job still running or queued. */
  async cancelAll(): Promise<void> {
    await Promise.all(this.jobs.filter((j) => j.active).map((j) => this.cancel(j.id)));
  }

  /** Removes finished, failed and cancelled cells from the grid (the gallery keeps its images). */
  clearFinished(): void {
    const gone = this.jobs.filter((j) => !(j.active || j.unsaved));
    this.jobs = this.jobs.filter((j) => j.active || j.unsaved);
    this.revokeUnshown(gone.map((j) => j.id));
  }

  /** Runs a failed or cancelled job's request again, in the same grid position. */
  retry(job: Job): void {
    const request = job.request ?? { prompt: job.prompt };
    const again = new Job(newRequestId(), job.prompt, request);
    const i = this.jobs.indexOf(job);
    if (i < 0) return;
    this.jobs[i] = again;
    this.revokeUnshown([job.id]);
    this.track(again, this.api.generate({ ...request, id: again.id }, this.progressFor(again), { preview: true }));
  }

  /** Sends requests; each becomes a job in the grid (the X/Y plot keeps the ones it sent). */
  submit(requests: GenerateRequest[]): Job[] {
    this.fieldErrors = {};
    return requests.map((r) => {
      const job = new Job(newRequestId(), r.prompt, r);
      this.jobs.push(job);
      this.track(job, this.api.generate({ ...r, id: job.id }, this.progressFor(job), { preview: true }));
      return job;
    });
  }

  private track(job: Job, reply: Promise<GenerateReply>): void {
    reply
      .then(({ id, metadata, png, stored, storageError }) => {
        // one reply per image: its file and settings arrive together, the gallery grows by one
        const url = this.urlFor(id, png);
        job.metadata = metadata;
        job.png = png;
        job.imageUrl = url;
        job.state = 'done';
        if (!stored) {
          // storage refused it: the cell keeps it (downloadable); it joins the gallery once the worker stores it
          job.unsaved = true;
          if (storageError) this.banner = storageError;
          return;
        }
        this.showInGallery(job);
      })
      .catch((e) => {
        const err = describeError(e);
        if (err.code === 'device_lost') {
          // not this request's fault: it stays in the durable queue and replays on a new device
          job.state = 'queued';
          void this.restart('the GPU device was lost');
        } else if (err.code === 'cancelled') job.state = 'cancelled';
        else if (err.code === 'invalid_request' && err.field && FORM_FIELDS.has(err.field)) {
          // bad input belongs next to its field; the cell never started
          this.jobs = this.jobs.filter((j) => j !== job);
          this.fieldErrors[err.field] = err.message;
        } else {
          job.state = 'failed';
          job.error = err.message;
          if (err.code === 'storage') this.banner = err.message;
        }
      });
  }

  async cancel(id: string): Promise<boolean> {
    return this.api.cancel(id);
  }

  /** A finished job's image at the head of the gallery, when the search lets it in. */
  private showInGallery(job: Job): void {
    const { metadata, png, imageUrl } = job;
    if (!metadata || !png || !imageUrl) return;
    if (!this.gallery.some((g) => g.metadata.id === metadata.id) && matchesQuery(metadata, { text: this.galleryText })) this.gallery.unshift({ metadata, url: imageUrl, png });
  }

  private urlFor(id: string, png: Blob): string {
    let url = this.urls.get(id);
    if (!url) {
      url = URL.createObjectURL(png);
      this.urls.set(id, url);
    }
    return url;
  }

  /** The first page of stored images matching the search, newest first (later ones arrive with their replies). */
  async refreshGallery(): Promise<void> {
    await this.searchGallery(this.galleryText);
  }

  private searches = 0;

  /** Filters the gallery by prompt; a later search wins over an earlier one still answering. */
  async searchGallery(text: string): Promise<void> {
    this.galleryText = text;
    const n = ++this.searches;
    const page = await this.galleryPage({ text });
    if (n !== this.searches) return;
    const before = this.gallery;
    this.gallery = page.items.map((i) => this.galleryItem(i));
    this.galleryMore = page.more;
    this.revokeUnshown(before.map((g) => g.metadata.id));
  }

  /** The next page, after the oldest image shown. */
  async moreGallery(): Promise<void> {
    const last = this.gallery.at(-1);
    if (!last) return this.refreshGallery();
    const n = this.searches;
    const page = await this.galleryPage({ text: this.galleryText, after: { createdAt: last.metadata.createdAt, id: last.metadata.id } });
    if (n !== this.searches) return; // a search started since: its first page wins
    const shown = new Set(this.gallery.map((g) => g.metadata.id));
    this.gallery = [...this.gallery, ...page.items.filter((i) => !shown.has(i.id)).map((i) => this.galleryItem(i))];
    this.galleryMore = page.more;
  }

  private galleryStore(): Promise<ImageStore> {
    this.images ??= ImageStore.open();
    return this.images;
  }

  private async galleryPage(query: ImageQuery) {
    this.galleryReads++;
    try {
      return await (await this.galleryStore()).page({ ...query, limit: GALLERY_PAGE });
    } finally {
      this.galleryReads--;
    }
  }

  /** Object URLs of images that left the gallery and no grid cell shows: their Blobs can go. */
  private revokeUnshown(ids: Iterable<string>): void {
    const shown = new Set([...this.gallery.map((g) => g.metadata.id), ...this.jobs.map((j) => j.id)]);
    for (const id of ids) {
      const url = this.urls.get(id);
      if (!url || shown.has(id)) continue;
      URL.revokeObjectURL(url);
      this.urls.delete(id);
    }
  }

  private galleryItem({ id, png, metadata }: StoredImage): GalleryItem {
    return { metadata, png, url: this.urlFor(id, png) };
  }

  async remove(id: string): Promise<void> {
    await this.removeMany([id]);
  }

  /** Deletes stored images; the page refills from older ones. */
  async removeMany(ids: string[]): Promise<void> {
    const store = await this.galleryStore();
    for (const id of ids) {
      await store.delete(id);
      const url = this.urls.get(id);
      if (url) URL.revokeObjectURL(url);
      this.urls.delete(id);
    }
    const gone = new Set(ids);
    this.gallery = this.gallery.filter((g) => !gone.has(g.metadata.id));
    for (const j of this.jobs) if (gone.has(j.id)) j.deleted = true;
  }

  /** Runs an image's settings again; an image request's input image and mask come from the store, where they are kept beside it. */
  async reproduce(m: ImageMetadata): Promise<void> {
    const request: GenerateRequest = { prompt: m.prompt, negativePrompt: m.negativePrompt, seed: m.seed, steps: m.steps, guidance: m.guidance, width: m.width, height: m.height };
    try {
      const inputs = await this.inputsOf(m);
      if (inputs) Object.assign(request, { ...inputs, strength: m.strength, ...(m.paddingMaskCrop !== undefined ? { paddingMaskCrop: m.paddingMaskCrop } : {}) });
    } catch (e) {
      this.banner = `Reproduce: ${describeError(e).message} (its input image is no longer stored; put it in the Image slot and use its settings)`;
      return;
    }
    this.submit([request]);
  }

  /** The input image and mask an image was made from, as PNG bytes (null for text to image). */
  async inputsOf(m: ImageMetadata): Promise<{ image: Uint8Array; mask?: Uint8Array } | null> {
    if (!m.image) return null;
    const bytes = async (sha: string) => new Uint8Array(await (await this.api.getInputImage(sha)).arrayBuffer());
    return { image: await bytes(m.image.sha256), ...(m.mask ? { mask: await bytes(m.mask.sha256) } : {}) };
  }

  /** Cancels running work and clears every stored image, queued request and downloaded model. */
  async deleteAll(): Promise<void> {
    await this.api.deleteAllData();
    this.jobs = [];
    // the requests that waited for another model went with the queue
    this.waiting = [];
    await this.refreshCache();
    for (const url of this.urls.values()) URL.revokeObjectURL(url);
    this.urls.clear();
    this.gallery = [];
  }
}

export { Comlink };
