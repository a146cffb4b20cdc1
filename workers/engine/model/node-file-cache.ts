// The download cache's storage in Node (CLI, benchmarks): one folder, each
// file stored under the hash of its URL beside a JSON record of its metadata.
// Bytes stream to a temporary name while they are hashed; the record is
// written last, once the file is complete and in place, so a crash never
// leaves a half file that looks whole.
import { createHash } from 'node:crypto';
import { createReadStream, openAsBlob } from 'node:fs';
import { mkdir, open, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { FileCache, type CacheBackend, type CacheMeta } from './file-cache.ts';

interface Record_ extends CacheMeta {
  key: string;
}

export function nodeCacheBackend(folder: string): CacheBackend {
  folder = resolve(folder);
  const name = (key: string) => createHash('sha256').update(key).digest('hex');
  const readRecord = async (file: string): Promise<Record_ | null> =>
    readFile(file, 'utf8').then(
      (t) => JSON.parse(t) as Record_,
      () => null,
    );
  return {
    async get(key) {
      const base = join(folder, name(key));
      const meta = await readRecord(`${base}.json`);
      const size = (await stat(base).catch(() => null))?.size;
      if (!meta || size !== meta.size) return null;
      return {
        meta,
        file: { path: base, folder, name: name(key) },
        bytes: async () => {
          const buf = await readFile(base);
          return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
        },
        blob: () => openAsBlob(base),
        stream: () => createReadStream(base) as AsyncIterable<Uint8Array>,
      };
    },
    async meta(key) {
      return readRecord(join(folder, `${name(key)}.json`));
    },
    async write(key, modelId, chunks) {
      await mkdir(folder, { recursive: true });
      const base = join(folder, name(key));
      const hash = createHash('sha256');
      let size = 0;
      const file = await open(`${base}.tmp`, 'w');
      try {
        for await (const chunk of chunks) {
          hash.update(chunk);
          await file.write(chunk);
          size += chunk.byteLength;
        }
      } catch (e) {
        await file.close();
        await rm(`${base}.tmp`, { force: true });
        throw e;
      }
      await file.close();
      await rm(`${base}.json`, { force: true });
      await rename(`${base}.tmp`, base);
      const meta: CacheMeta = { modelId, size, sha256: hash.digest('hex'), storedAt: new Date().toISOString() };
      await writeFile(`${base}.json`, JSON.stringify({ key, ...meta }));
      return meta;
    },
    async remove(key) {
      const base = join(folder, name(key));
      await rm(`${base}.json`, { force: true });
      await rm(base, { force: true });
    },
    async clear() {
      await rm(folder, { recursive: true, force: true });
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
    async sha256() {
      const h = createHash('sha256');
      return { update: (c) => h.update(c), hex: () => h.digest('hex') };
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
