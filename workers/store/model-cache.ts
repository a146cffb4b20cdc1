// The download cache's storage in the browser: Cache Storage, one Response per
// model file keyed by its URL, written as the download streams in (nothing
// held in memory), and a second cache with each file's record (model id, size,
// SHA-256 hashed on the way in by hash-wasm). The record is written last, so
// a file without one is incomplete and never read. A stored file comes back
// as a disk-backed Blob that onnxruntime reads range by range.
import { createSHA256 } from 'hash-wasm';
import { FileCache, type CacheBackend, type CacheMeta } from '../engine/model/file-cache.ts';
import { blobChunks } from '../engine/model/graph-stream.ts';

export const MODEL_CACHE_NAME = 'sd3-webgpu-models-v2';
const RECORD_CACHE_NAME = `${MODEL_CACHE_NAME}-records`;
/** Earlier layouts: dropped on first use (their files are downloaded again). */
const LEGACY_CACHE_NAMES = ['sd3-webgpu-models-v1'];

export function cacheStorageBackend(name = MODEL_CACHE_NAME, records = RECORD_CACHE_NAME): CacheBackend {
  let migrated: Promise<unknown> | null = null;
  const open = async (n: string) => {
    migrated ??= Promise.all(LEGACY_CACHE_NAMES.map((l) => caches.delete(l)));
    await migrated;
    return caches.open(n);
  };
  const readRecord = async (key: string): Promise<CacheMeta | null> => {
    const r = await (await open(records)).match(key);
    return r ? ((await r.json().catch(() => null)) as CacheMeta | null) : null;
  };
  return {
    async get(key) {
      const meta = await readRecord(key);
      const r = meta && (await (await open(name)).match(key));
      if (!meta || !r) return null;
      const blob = await r.blob(); // a handle on the stored body, not a copy
      if (blob.size !== meta.size) return null;
      return { meta, blob: async () => blob, bytes: async () => new Uint8Array(await blob.arrayBuffer()), stream: () => blobChunks(blob) };
    },
    meta: readRecord,
    async write(key, modelId, chunks) {
      const hash = await createSHA256();
      hash.init();
      let size = 0;
      const it = chunks[Symbol.asyncIterator]();
      const body = new ReadableStream<Uint8Array>({
        async pull(ctl) {
          const { done, value } = await it.next();
          if (done) {
            ctl.close();
            return;
          }
          hash.update(value);
          size += value.byteLength;
          ctl.enqueue(value);
        },
        async cancel() {
          await it.return?.();
        },
      });
      await (await open(records)).delete(key); // the old record goes first: a half-written body is never taken for whole
      await (await open(name)).put(key, new Response(body, { headers: { 'content-type': 'application/octet-stream' } }));
      const meta: CacheMeta = { modelId, size, sha256: hash.digest('hex'), storedAt: new Date().toISOString() };
      await (await open(records)).put(key, new Response(JSON.stringify(meta), { headers: { 'content-type': 'application/json' } }));
      return meta;
    },
    async remove(key) {
      await (await open(records)).delete(key);
      await (await open(name)).delete(key);
    },
    async clear() {
      await caches.delete(records);
      await caches.delete(name);
    },
    async list() {
      const cache = await open(records);
      const out: { key: string; meta: CacheMeta }[] = [];
      for (const req of await cache.keys()) {
        const meta = await readRecord(req.url);
        if (meta) out.push({ key: req.url, meta });
      }
      return out;
    },
    async sha256() {
      const h = await createSHA256();
      h.init();
      return { update: (c) => void h.update(c), hex: () => h.digest('hex') };
    },
  };
}

export function browserModelCache(): FileCache | undefined {
  return typeof caches === 'undefined' ? undefined : new FileCache(cacheStorageBackend());
}
