// The download cache's storage in the browser: Cache Storage, one Response per
// model file keyed by its URL, with the file's metadata (model id, size,
// SHA-256) in a header. Cache Storage streams bodies to disk and is cleared
// with the site's data; the page can see and delete it (Gallery's "Cached models").
import { FileCache, type CacheBackend, type CacheMeta } from '../engine/model/file-cache.ts';

export const MODEL_CACHE_NAME = 'sd3-webgpu-models-v1';
const META_HEADER = 'x-sd3-webgpu-meta';

export function cacheStorageBackend(name = MODEL_CACHE_NAME): CacheBackend {
  const open = () => caches.open(name);
  const metaOf = (r: Response): CacheMeta | null => {
    try {
      return JSON.parse(r.headers.get(META_HEADER) ?? 'null') as CacheMeta | null;
    } catch {
      return null;
    }
  };
  return {
    async read(key) {
      const r = await (await open()).match(key);
      const meta = r && metaOf(r);
      if (!r || !meta) return null;
      return { bytes: new Uint8Array(await r.arrayBuffer()), meta };
    },
    async meta(key) {
      const r = await (await open()).match(key);
      return r ? metaOf(r) : null;
    },
    async write(key, bytes, meta) {
      const headers = { 'content-type': 'application/octet-stream', 'content-length': String(bytes.byteLength), [META_HEADER]: JSON.stringify(meta) };
      await (await open()).put(key, new Response(bytes as Uint8Array<ArrayBuffer>, { headers }));
    },
    async remove(key) {
      await (await open()).delete(key);
    },
    async list() {
      const cache = await open();
      const out: { key: string; meta: CacheMeta }[] = [];
      for (const req of await cache.keys()) {
        const r = await cache.match(req);
        const meta = r && metaOf(r);
        if (meta) out.push({ key: req.url, meta });
      }
      return out;
    },
  };
}

export function browserModelCache(): FileCache | undefined {
  return typeof caches === 'undefined' ? undefined : new FileCache(cacheStorageBackend());
}
