// A download cache for model files, so a model's gigabytes cross the network
// once. Each entry records the file's size and SHA-256 when it was stored; a
// read checks both, so a truncated or corrupt entry is dropped and fetched
// again. Only complete, verified downloads are ever stored, so an interrupted
// download leaves nothing behind and the next load starts it cleanly.
// Storage itself is pluggable: Cache Storage in the browser
// (workers/store/cache-storage-files.ts), a folder in Node (node-file-cache.ts).
import type { ByteProgress, ModelFiles } from './model-files.ts';

export interface CacheMeta {
  /** The model the file belongs to (for usage per model and deletion). */
  modelId: string;
  size: number;
  sha256: string;
  storedAt: string;
}

/** Raw storage under the cache: keys are the files' URLs. */
export interface CacheBackend {
  read(key: string): Promise<{ bytes: Uint8Array; meta: CacheMeta } | null>;
  /** Metadata without reading the bytes. */
  meta(key: string): Promise<CacheMeta | null>;
  write(key: string, bytes: Uint8Array, meta: CacheMeta): Promise<void>;
  remove(key: string): Promise<void>;
  list(): Promise<{ key: string; meta: CacheMeta }[]>;
}

export interface CachedModelUsage {
  modelId: string;
  files: number;
  bytes: number;
}

async function sha256(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

export class FileCache {
  /** Entries found corrupt and dropped since this cache was opened (keys). */
  readonly dropped: string[] = [];

  constructor(readonly backend: CacheBackend) {}

  /** Verified bytes for a key, or null (a bad entry is removed). */
  async get(key: string): Promise<Uint8Array | null> {
    const hit = await this.backend.read(key).catch(() => null);
    if (!hit) return null;
    if (hit.bytes.byteLength === hit.meta.size && (await sha256(hit.bytes)) === hit.meta.sha256) return hit.bytes;
    this.dropped.push(key);
    await this.backend.remove(key).catch(() => undefined);
    return null;
  }

  async size(key: string): Promise<number | null> {
    return (await this.backend.meta(key).catch(() => null))?.size ?? null;
  }

  async put(key: string, modelId: string, bytes: Uint8Array): Promise<void> {
    await this.backend.write(key, bytes, { modelId, size: bytes.byteLength, sha256: await sha256(bytes), storedAt: new Date().toISOString() });
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
    for (const { key } of await this.backend.list()) await this.backend.remove(key);
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

/** A source whose files have stable URLs (and so can be cached). */
export interface CacheableModelFiles extends ModelFiles {
  cacheKey(path: string): string;
}

export function isCacheable(files: ModelFiles): files is CacheableModelFiles {
  return typeof (files as Partial<CacheableModelFiles>).cacheKey === 'function';
}

/** Reads through the cache: hits cost no network, misses are stored once complete. */
export class CachedModelFiles implements ModelFiles {
  /** Paths served from the cache during this object's life. */
  readonly hits = new Set<string>();
  /** Why storing a file failed (quota…): the load carries on without caching it. */
  readonly storeErrors: string[] = [];

  constructor(
    private readonly inner: CacheableModelFiles,
    private readonly cache: FileCache,
  ) {}

  get id(): string {
    return this.inner.id;
  }

  async read(path: string, onProgress?: ByteProgress): Promise<Uint8Array> {
    const key = this.inner.cacheKey(path);
    const cached = await this.cache.get(key);
    if (cached) {
      this.hits.add(path);
      onProgress?.(cached.byteLength, cached.byteLength);
      return cached;
    }
    const bytes = await this.inner.read(path, onProgress);
    await this.cache.put(key, this.inner.id, bytes).catch((e: unknown) => {
      this.storeErrors.push(`${path}: ${(e as Error).message ?? e}`);
    });
    return bytes;
  }

  async size(path: string): Promise<number | null> {
    return (await this.cache.size(this.inner.cacheKey(path))) ?? this.inner.size(path);
  }

  async exists(path: string): Promise<boolean> {
    return (await this.size(path)) !== null;
  }
}
