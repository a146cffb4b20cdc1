// A download cache for model files, so a model's gigabytes cross the network
// once. Files stream into storage as they download, hashed (SHA-256) on the
// way; an entry becomes visible only once complete, so an interrupted
// download leaves nothing behind. A stored file is checked against its
// recorded size on every load (cheap) and against its hash when asked
// (`verify`: reading gigabytes again on every load would cost minutes).
// Storage itself is pluggable: Cache Storage in the browser
// (workers/store/model-cache.ts), a folder in Node (node-file-cache.ts).
import type { ByteProgress, LocalFile, ModelFiles, RefStore } from './model-files.ts';

export interface CacheMeta {
  /** The model the file belongs to (for usage per model and deletion). */
  modelId: string;
  size: number;
  sha256: string;
  storedAt: string;
}

/** A complete stored file. */
export interface StoredFile {
  meta: CacheMeta;
  /** The bytes in memory (small files). */
  bytes(): Promise<Uint8Array>;
  /** A Blob read from storage as it is consumed (large files: no copy in memory). */
  blob(): Promise<Blob>;
  /** The stored bytes as a stream (hash checks). */
  stream(): AsyncIterable<Uint8Array>;
  /** Where the bytes lie on disk (the Node cache): native onnxruntime reads them there. */
  file?: Omit<LocalFile, 'size'>;
}

/** Incremental SHA-256 over a stream: each platform brings its own (node:crypto, hash-wasm). */
export interface Sha256 {
  update(chunk: Uint8Array): void;
  hex(): string;
}

/** Raw storage under the cache: keys are the files' URLs. */
export interface CacheBackend {
  /** A complete entry whose stored size matches its record, or null. */
  get(key: string): Promise<StoredFile | null>;
  /** Metadata without reading the bytes. */
  meta(key: string): Promise<CacheMeta | null>;
  /** Streams a file into storage, hashing it as it goes; visible only once the whole file is stored. */
  write(key: string, modelId: string, chunks: AsyncIterable<Uint8Array>): Promise<CacheMeta>;
  remove(key: string): Promise<void>;
  list(): Promise<{ key: string; meta: CacheMeta }[]>;
  /** Removes everything, half-written files included. */
  clear(): Promise<void>;
  sha256(): Promise<Sha256>;
}

export interface CachedModelUsage {
  modelId: string;
  files: number;
  bytes: number;
}

export class FileCache {
  /** Entries found incomplete or corrupt and dropped since this cache was opened (keys). */
  readonly dropped: string[] = [];

  constructor(readonly backend: CacheBackend) {}

  /** A complete entry, or null (an entry whose size disagrees with its record is removed). */
  async get(key: string): Promise<StoredFile | null> {
    const meta = await this.backend.meta(key).catch(() => null);
    if (!meta) return null;
    const hit = await this.backend.get(key).catch(() => null);
    if (hit) return hit;
    await this.drop(key);
    return null;
  }

  private async drop(key: string): Promise<void> {
    this.dropped.push(key);
    await this.backend.remove(key).catch(() => undefined);
  }

  async size(key: string): Promise<number | null> {
    return (await this.backend.meta(key).catch(() => null))?.size ?? null;
  }

  /** Stores a file from its stream; resolves with its record once every byte is stored. */
  put(key: string, modelId: string, chunks: AsyncIterable<Uint8Array>): Promise<CacheMeta> {
    return this.backend.write(key, modelId, chunks);
  }

  /** Re-reads a model's files (all, or only `keys`) and checks their hashes; bad entries are dropped (the next load fetches them again). */
  async verify(modelId: string, keys?: readonly string[]): Promise<{ checked: number; dropped: string[] }> {
    const dropped: string[] = [];
    let checked = 0;
    for (const { key, meta } of await this.backend.list()) {
      if (meta.modelId !== modelId || (keys && !keys.includes(key))) continue;
      checked++;
      const hit = await this.backend.get(key).catch(() => null);
      let ok = false;
      if (hit) {
        const h = await this.backend.sha256();
        for await (const chunk of hit.stream()) h.update(chunk);
        ok = h.hex() === meta.sha256;
      }
      if (!ok) {
        await this.drop(key);
        dropped.push(key);
      }
    }
    return { checked, dropped };
  }

  /** Space used per cached model, largest first. */
  async usage(): Promise<CachedModelUsage[]> {
    const byModel = new Map<string, CachedModelUsage>();
    for (const { meta } of await this.backend.list()) {
      const u = byModel.get(meta.modelId) ?? { modelId: meta.modelId, files: 0, bytes: 0 };
      u.files++;
      u.bytes += meta.size;
      byModel.set(meta.modelId, u);
    }
    return [...byModel.values()].sort((a, b) => b.bytes - a.bytes);
  }

  /** Removes every cached file of every model. */
  async clear(): Promise<void> {
    await this.backend.clear();
  }

  /** Removes every cached file of a model; resolves with the bytes freed. */
  async deleteModel(modelId: string): Promise<number> {
    let freed = 0;
    for (const { key, meta } of await this.backend.list()) {
      if (meta.modelId !== modelId) continue;
      await this.backend.remove(key);
      freed += meta.size;
    }
    return freed;
  }
}

/** A source whose files have stable URLs and stream (and so can be cached). */
export interface CacheableModelFiles extends ModelFiles {
  /** Valid once prepare() has resolved. */
  cacheKey(path: string): string;
  stream(path: string, onProgress?: ByteProgress): AsyncIterable<Uint8Array>;
  /** Work before the first cache key (a Hub repo resolves its revision to a commit); `refs` remembers what it resolved, for offline loads. */
  prepare?(refs: RefStore): Promise<void>;
}

export function isCacheable(files: ModelFiles): files is CacheableModelFiles {
  const f = files as Partial<CacheableModelFiles>;
  return typeof f.cacheKey === 'function' && typeof f.stream === 'function';
}

/** Reads through the cache: hits cost no network; misses stream into storage and are read from there. */
export class CachedModelFiles implements ModelFiles {
  /** Paths served from the cache during this object's life. */
  readonly hits = new Set<string>();
  /** Why storing a file failed (quota…): the load carries on without caching it. */
  readonly storeErrors: string[] = [];
  /** Paths whose storing failed: read from the source from then on, not downloaded into a failing write again. */
  private readonly unstorable = new Set<string>();
  private ready: Promise<void> | null = null;

  constructor(
    private readonly inner: CacheableModelFiles,
    private readonly cache: FileCache,
  ) {}

  get id(): string {
    return this.inner.id;
  }

  /** The source's preparation, once (tried again after a failure); a resolved commit is remembered in the cache beside the files. */
  private prepared(): Promise<void> {
    if (!this.inner.prepare) return Promise.resolve();
    const refs: RefStore = {
      get: async (key) => {
        const hit = await this.cache.get(key);
        return hit ? new TextDecoder().decode(await hit.bytes()) : null;
      },
      set: async (key, commit) => {
        await this.cache.put(key, this.inner.id, oneChunk(new TextEncoder().encode(commit)));
      },
    };
    this.ready ??= this.inner.prepare(refs);
    this.ready.catch(() => (this.ready = null));
    return this.ready;
  }

  /** The source's listing, when it has one; kept beside the files (a commit's listing never changes), so a cached model lists offline. */
  async list(): Promise<{ path: string; size: number }[] | null> {
    await this.prepared();
    if (!this.inner.list) return null;
    const key = `${this.inner.cacheKey('')}#listing`;
    const hit = await this.cache.get(key);
    if (hit) return JSON.parse(new TextDecoder().decode(await hit.bytes())) as { path: string; size: number }[];
    const listing = await this.inner.list();
    if (listing) await this.cache.put(key, this.inner.id, oneChunk(new TextEncoder().encode(JSON.stringify(listing)))).catch(() => undefined);
    return listing;
  }

  /** The stored file, downloading it into the cache first when absent; null when storing failed. */
  private async stored(path: string, onProgress?: ByteProgress): Promise<StoredFile | null> {
    await this.prepared();
    if (this.unstorable.has(path)) return null;
    const key = this.inner.cacheKey(path);
    const cached = await this.cache.get(key);
    if (cached) {
      this.hits.add(path);
      onProgress?.(cached.meta.size, cached.meta.size);
      return cached;
    }
    const source: { error?: unknown } = {};
    try {
      await this.cache.put(key, this.inner.id, watchSource(this.inner.stream(path, onProgress), source));
    } catch (e) {
      // a failed download is the download's error (it names the file); a failed write falls back to the network
      if (source.error !== undefined) throw source.error;
      this.storeErrors.push(`${path}: ${(e as Error).message ?? e}`);
      this.unstorable.add(path);
      return null;
    }
    return this.cache.get(key);
  }

  async store(path: string, onProgress?: ByteProgress): Promise<number | null> {
    return (await this.stored(path, onProgress))?.meta.size ?? null;
  }

  async read(path: string, onProgress?: ByteProgress): Promise<Uint8Array> {
    const stored = await this.stored(path, onProgress);
    return stored ? stored.bytes() : this.inner.read(path, onProgress);
  }

  /** The stored file on disk, downloading it into the cache first; null where the cache keeps no files (the browser's) or storing failed. */
  async localFile(path: string, onProgress?: ByteProgress): Promise<LocalFile | null> {
    const stored = await this.stored(path, onProgress);
    return stored?.file ? { ...stored.file, size: stored.meta.size } : null;
  }

  async blob(path: string, onProgress?: ByteProgress): Promise<Blob> {
    const stored = await this.stored(path, onProgress);
    if (stored) return stored.blob();
    if (this.inner.blob) return this.inner.blob(path, onProgress);
    return new Blob([(await this.inner.read(path, onProgress)) as Uint8Array<ArrayBuffer>]);
  }

  async size(path: string): Promise<number | null> {
    await this.prepared();
    return (await this.cache.size(this.inner.cacheKey(path))) ?? this.inner.size(path);
  }

  async exists(path: string): Promise<boolean> {
    return (await this.size(path)) !== null;
  }
}

async function* oneChunk(bytes: Uint8Array): AsyncIterable<Uint8Array> {
  yield bytes;
}

/** Passes a stream through, remembering whether it was the source that failed (storage failing stops reading instead). */
async function* watchSource(chunks: AsyncIterable<Uint8Array>, source: { error?: unknown }): AsyncIterable<Uint8Array> {
  try {
    for await (const chunk of chunks) yield chunk;
  } catch (e) {
    source.error = e;
    throw e;
  }
}
