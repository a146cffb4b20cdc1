// The download cache's storage in Node (CLI, benchmarks): one folder, each
// file stored under the hash of its URL beside a JSON record of its metadata.
// Writes go to a temporary name first, so a crash never leaves half a file
// under the real one.
import { createHash } from 'node:crypto';
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { FileCache, type CacheBackend, type CacheMeta } from './file-cache.ts';

interface Record_ extends CacheMeta {
  key: string;
}

export function nodeCacheBackend(folder: string): CacheBackend {
  const name = (key: string) => createHash('sha256').update(key).digest('hex');
  const readRecord = async (file: string): Promise<Record_ | null> =>
    readFile(file, 'utf8').then(
      (t) => JSON.parse(t) as Record_,
      () => null,
    );
  return {
    async read(key) {
      const meta = await readRecord(join(folder, `${name(key)}.json`));
      if (!meta) return null;
      const buf = await readFile(join(folder, name(key))).catch(() => null);
      return buf ? { bytes: new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength), meta } : null;
    },
    async meta(key) {
      return readRecord(join(folder, `${name(key)}.json`));
    },
    async write(key, bytes, meta) {
      await mkdir(folder, { recursive: true });
      const base = join(folder, name(key));
      await writeFile(`${base}.tmp`, bytes);
      await rename(`${base}.tmp`, base);
      await writeFile(`${base}.json`, JSON.stringify({ key, ...meta }));
    },
    async remove(key) {
      const base = join(folder, name(key));
      await rm(`${base}.json`, { force: true });
      await rm(base, { force: true });
    },
    async list() {
      const names = await readdir(folder).catch(() => [] as string[]);
      const out: { key: string; meta: CacheMeta }[] = [];
      for (const n of names.filter((f) => f.endsWith('.json'))) {
        const r = await readRecord(join(folder, n));
        if (r) out.push({ key: r.key, meta: r });
      }
      return out;
    },
  };
}

/** `$SD3_WEBGPU_CACHE`, else ~/.cache/sd3-webgpu/models. */
export function defaultNodeCacheFolder(): string {
  return process.env.SD3_WEBGPU_CACHE ?? join(homedir(), '.cache', 'sd3-webgpu', 'models');
}

export function nodeFileCache(folder = defaultNodeCacheFolder()): FileCache {
  return new FileCache(nodeCacheBackend(folder));
}
