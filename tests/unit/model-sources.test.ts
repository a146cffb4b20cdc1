// Real checkpoints' path, on everything that can be tested offline: a real HTTP
// server in the Hub's layout (repo, revision, subfolder, both external-data
// conventions), the download cache (no network on a second load, a truncated
// entry re-fetched, an interrupted download restarted cleanly), the refusal of
// a model that cannot fit, sharded external data, and the shader-f16 check.
import { cp, mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import onnxProto from 'onnx-proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ProgressEvent } from '../../workers/engine/api/types.ts';
import type { Engine } from '../../workers/engine/engine.ts';
import { ModelLoadError, ModelTooLargeError } from '../../workers/engine/errors.ts';
import { FileCache } from '../../workers/engine/model/file-cache.ts';
import { UrlModelFiles } from '../../workers/engine/model/model-files.ts';
import { graphInitializers, hasHalfPrecisionWeights, ONNX_DTYPE } from '../../workers/engine/model/graph-info.ts';
import { nodeCacheBackend } from '../../workers/engine/model/node-file-cache.ts';
import { createNodeEngine } from '../../workers/engine/node.ts';
import { reshard } from '../../tools/reshard/reshard.ts';
import { servedCommit, startModelServer, type ModelServer } from '../helpers/model-server.ts';
import { loadTinyEngine, maxPixelDiff, TINY_MODEL_DIR, TINY_MODEL_EXTERNAL_DIR } from '../helpers/tiny-engine.ts';

const { onnx } = onnxProto;
const REPO = 'acme/tiny-sd3-onnx';
const SUB = 'onnx'; // AMD / TensorStack exports keep the model in a subfolder
const hub = (server: ModelServer) => ({ kind: 'hub' as const, repo: REPO, subfolder: SUB, host: server.url });
const weightPath = (p: string) => /\/model\.onnx(_data|\.data)?(\.\d{3})?$/.test(p);

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) if (e.isFile()) out.push(relative(dir, join(e.parentPath, e.name)));
  return out.sort();
}

describe('Hub layout, cache and device fit', () => {
  let root: string;
  let server: ModelServer;
  let cacheDir: string;
  let weightBytes: number;
  const engineWithCache = (opts: Parameters<typeof createNodeEngine>[0] = {}) => createNodeEngine({ fileCache: new FileCache(nodeCacheBackend(cacheDir)), ...opts });
  // files come from the commit the branch resolved to (as huggingface_hub fetches them); paths here name the branch
  const atBranch = (path: string) => path.replace(`/resolve/${servedCommit({ repo: REPO, folder: '' })}/`, '/resolve/main/');
  const modelGets = () => server.requests.filter((r) => r.method === 'GET' && r.path.includes('/resolve/')).map((r) => ({ ...r, path: atBranch(r.path) }));

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'sd3-hub-'));
    cacheDir = join(root, 'cache');
    await cp(TINY_MODEL_EXTERNAL_DIR, join(root, 'repo', SUB), { recursive: true });
    server = await startModelServer({ repos: [{ repo: REPO, folder: join(root, 'repo') }] });
    weightBytes = 0;
    for (const f of await filesUnder(join(root, 'repo', SUB))) {
      if (weightPath(`/${f}`)) weightBytes += (await stat(join(root, 'repo', SUB, f))).size;
    }
  });
  afterAll(async () => {
    await server?.close();
    await rm(root, { recursive: true, force: true });
  });

  it('loads by repo id from a Hub-layout server (subfolder, both external-data names); progress sums to the total', async () => {
    const events: ProgressEvent[] = [];
    const engine = engineWithCache();
    const info = await engine.load(hub(server), (e) => events.push(e));
    expect(info.id).toBe(`${REPO}/${SUB}`);
    expect(info.weightBytes).toBe(weightBytes);
    // both conventions were fetched under the Hub's resolve scheme
    const paths = modelGets().map((r) => r.path);
    expect(paths).toContain(`/${REPO}/resolve/main/${SUB}/transformer/model.onnx_data`);
    expect(paths).toContain(`/${REPO}/resolve/main/${SUB}/text_encoder_2/model.onnx.data`);
    // per file: each file's last event carries its full size; together they make the total
    const done = events.filter((e) => e.status === 'done');
    expect(done.reduce((a, e) => a + e.loaded, 0)).toBe(weightBytes);
    const ready = events.at(-1)!;
    expect(ready).toMatchObject({ status: 'ready', loaded: weightBytes, total: weightBytes, overall: { loaded: weightBytes, total: weightBytes } });
    // overall: the whole total is known before the first weight file downloads (planning reads only the small graphs), and the bytes only grow
    const overall = events.filter((e) => e.overall).map((e) => e.overall!);
    const firstWeights = events.findIndex((e) => e.status === 'download' && /onnx(_data|\.data)$/.test(e.file ?? ''));
    expect(events[firstWeights].overall!.total).toBe(weightBytes);
    for (let i = 1; i < overall.length; i++) expect(overall[i].loaded).toBeGreaterThanOrEqual(overall[i - 1].loaded);
    const local = await loadTinyEngine();
    const [a, b] = await Promise.all([engine.generate({ prompt: 'a hub', seed: 5 }), local.generate({ prompt: 'a hub', seed: 5 })]);
    expect(maxPixelDiff(a.rgba, b.rgba)).toBe(0);
  });

  it('a second load reads no model file from the network', async () => {
    server.requests.length = 0;
    const events: ProgressEvent[] = [];
    const engine = engineWithCache();
    await engine.load(hub(server), (e) => events.push(e));
    // only the revision is asked, to find its commit (the files, and the listing of that commit, are cached)
    expect(server.requests.map((r) => r.path)).toEqual([`/api/models/${REPO}/revision/main`]);
    expect(events.filter((e) => e.status === 'done').every((e) => e.cached)).toBe(true);
    expect((await engine.generate({ prompt: 'cached', seed: 1 })).rgba.length).toBe(64 * 64 * 4);
  });

  it('a truncated cache entry is detected on load and fetched again; a corrupt one when the cache is verified', async () => {
    const cache = new FileCache(nodeCacheBackend(cacheDir));
    const entries = await cache.backend.list();
    const dataKey = entries.find((e) => e.key.endsWith('transformer/model.onnx_data'))!.key;
    const graphKey = entries.find((e) => e.key.endsWith('vae_decoder/model.onnx'))!.key;
    const { createHash } = await import('node:crypto');
    const fileOf = (key: string) => join(cacheDir, createHash('sha256').update(key).digest('hex'));
    await truncate(fileOf(dataKey), 1000);
    const bytes = await readFile(fileOf(graphKey));
    bytes[bytes.length >> 1] ^= 0xff; // same size, one flipped byte: only the hash sees it
    await writeFile(fileOf(graphKey), bytes);

    // every load checks sizes (cheap): the truncated file is fetched again; a flipped byte inside a weight is not noticed
    server.requests.length = 0;
    await createNodeEngine({ fileCache: cache }).load(hub(server));
    expect(cache.dropped).toEqual([dataKey]);
    expect(modelGets().map((r) => r.path)).toEqual([atBranch(new URL(dataKey).pathname)]);

    // hashes are checked once when a file is written, and again on request
    const report = await cache.verify(`${REPO}/${SUB}`);
    expect(report.checked).toBe(entries.filter((e) => e.meta.modelId === `${REPO}/${SUB}`).length);
    expect(report.dropped).toEqual([graphKey]);
    server.requests.length = 0;
    const engine = createNodeEngine({ fileCache: cache });
    await engine.load(hub(server));
    expect(modelGets().map((r) => r.path)).toEqual([atBranch(new URL(graphKey).pathname)]);
    const local = await loadTinyEngine();
    const [a, b] = await Promise.all([engine.generate({ prompt: 'healed', seed: 9 }), local.generate({ prompt: 'healed', seed: 9 })]);
    expect(maxPixelDiff(a.rgba, b.rgba)).toBe(0);
  });

  it('a cached graph that onnxruntime cannot read is checked, found corrupt and fetched again within the same load', async () => {
    const cache = new FileCache(nodeCacheBackend(cacheDir));
    const graphKey = (await cache.backend.list()).find((e) => e.key.endsWith('transformer/model.onnx'))!.key;
    const { createHash } = await import('node:crypto');
    const file = join(cacheDir, createHash('sha256').update(graphKey).digest('hex'));
    const bytes = await readFile(file);
    bytes.fill(0xff, 0, 64); // same size, a broken protobuf header
    await writeFile(file, bytes);
    server.requests.length = 0;
    const engine = createNodeEngine({ fileCache: cache });
    await engine.load(hub(server));
    expect(cache.dropped).toEqual([graphKey]);
    expect(modelGets().map((r) => r.path)).toEqual([atBranch(new URL(graphKey).pathname)]);
    expect((await engine.generate({ prompt: 'healed graph', seed: 3, steps: 1 })).rgba.length).toBe(64 * 64 * 4);
  });

  for (const ranges of [true, false]) {
    it(`a connection cut in the middle of a large file ${ranges ? 'resumes with a Range request' : 'starts over on a server without ranges'}, progress never going back`, async () => {
      const dir = join(root, `cache-resume-${ranges}`);
      const cache = new FileCache(nodeCacheBackend(dir));
      const path = `/${REPO}/resolve/main/${SUB}/transformer/model.onnx_data`;
      const size = (await stat(join(root, 'repo', SUB, 'transformer/model.onnx_data'))).size;
      const cut = Math.floor(size / 2);
      server.faults.set(path, { truncateAt: cut, times: 1 });
      server.ranges = ranges;
      server.requests.length = 0;
      const events: ProgressEvent[] = [];
      const engine = createNodeEngine({ fileCache: cache });
      try {
        await engine.load(hub(server), (e) => events.push(e));
      } finally {
        server.faults.delete(path);
        server.ranges = true;
      }
      const gets = modelGets().filter((r) => r.path === path);
      expect(gets.map((r) => [r.range ?? null, r.status])).toEqual([[null, 200], [`bytes=${cut}-`, ranges ? 206 : 200]]);
      // the file's progress only grows, from the cut to its end
      const mine = events.filter((e) => e.file === 'transformer/model.onnx_data' && e.status === 'download').map((e) => e.loaded);
      expect(mine.length).toBeGreaterThan(1);
      for (let i = 1; i < mine.length; i++) expect(mine[i]).toBeGreaterThan(mine[i - 1]);
      expect(mine.at(-1)).toBe(size);
      // stored whole: its recorded hash is the file's own
      const { createHash } = await import('node:crypto');
      const meta = (await cache.backend.list()).find((e) => e.key.endsWith('transformer/model.onnx_data'))!.meta;
      expect(meta.size).toBe(size);
      expect(meta.sha256).toBe(createHash('sha256').update(await readFile(join(root, 'repo', SUB, 'transformer/model.onnx_data'))).digest('hex'));
      const local = await loadTinyEngine();
      const [a, b] = await Promise.all([engine.generate({ prompt: 'resumed', seed: 8 }), local.generate({ prompt: 'resumed', seed: 8 })]);
      expect(maxPixelDiff(a.rgba, b.rgba)).toBe(0);
    });
  }

  it('download progress reaches the page at most ~10 times a second: the first update, the last byte, done and ready always', async () => {
    const file = 'transformer/model.onnx_data';
    const path = `/${REPO}/resolve/main/${SUB}/${file}`;
    const size = (await stat(join(root, 'repo', SUB, file))).size;
    // a trickle: 4 KB every 2 ms, over a hundred chunks
    server.faults.set(path, { trickle: { bytes: 4096, everyMs: 2 } });
    const events: (ProgressEvent & { at: number })[] = [];
    try {
      await createNodeEngine().load(hub(server), (e) => events.push({ ...e, at: performance.now() }));
    } finally {
      server.faults.delete(path);
    }
    const mine = events.filter((e) => e.file === file);
    const downloads = mine.filter((e) => e.status === 'download');
    const ms = mine.at(-1)!.at - mine[0].at;
    expect(Math.ceil(size / 4096)).toBeGreaterThan(100);
    // one every 100 ms, plus the first and the last
    expect(downloads.length).toBeLessThanOrEqual(Math.floor(ms / 100) + 2);
    expect(downloads[0].loaded).toBeLessThanOrEqual(4096 * 2);
    expect(downloads.at(-1)!.loaded).toBe(size);
    expect(mine.at(-1)).toMatchObject({ status: 'done', loaded: size, total: size });
    // the whole load's updates, every file together, keep to the same pace; the last says the model is ready with every byte
    const all = events.filter((e) => e.status === 'download');
    const files = new Set(all.map((e) => e.file)).size;
    expect(all.length).toBeLessThanOrEqual(Math.floor((events.at(-1)!.at - events[0].at) / 100) + 2 * files);
    expect(events.at(-1)).toMatchObject({ status: 'ready', loaded: weightBytes, overall: { loaded: weightBytes, total: weightBytes } });
  });

  describe('resuming after a blip', () => {
    const file = 'transformer/model.onnx_data';
    const path = `/${REPO}/resolve/main/${SUB}/${file}`;
    const gets = () => server.requests.filter((r) => r.method === 'GET' && r.path === path);
    const open = (opts: { maxStalls?: number; retryDelayMs?: number }) => new UrlModelFiles(`${server.url}/${REPO}/resolve/main/${SUB}/`, 'blip', undefined, opts);

    it('network errors while resuming keep asking for the rest with Range, each wait twice the last; the file is fetched once in all', async () => {
      const whole = await readFile(join(root, 'repo', SUB, file));
      const cut = Math.floor(whole.byteLength / 3);
      // the connection drops a third of the way in; the next two resumes meet a reset before any answer
      server.faults.set(path, { sequence: [{ truncateAt: cut }, { reset: true }, { reset: true }] });
      server.requests.length = 0;
      const events: number[] = [];
      let bytes: Uint8Array;
      try {
        bytes = await open({ retryDelayMs: 20 }).read(file, (loaded) => events.push(loaded));
      } finally {
        server.faults.delete(path);
      }
      expect(Buffer.from(bytes).equals(whole)).toBe(true);
      expect(gets().map((r) => [r.range ?? null, r.status ?? 'reset'])).toEqual([[null, 200], [`bytes=${cut}-`, 'reset'], [`bytes=${cut}-`, 'reset'], [`bytes=${cut}-`, 206]]);
      // what crossed the network: the file once, not once and then again whole
      expect(gets().reduce((n, r) => n + (r.bytes ?? 0), 0)).toBe(whole.byteLength);
      // backoff: 20, 40, then 80 ms before the attempts after the drop
      const at = gets().map((r) => r.at!);
      for (const [i, wait] of [[1, 20], [2, 40], [3, 80]]) expect(at[i] - at[i - 1]).toBeGreaterThanOrEqual(wait - 1);
      for (let i = 1; i < events.length; i++) expect(events[i]).toBeGreaterThan(events[i - 1]);
      expect(events.at(-1)).toBe(whole.byteLength);
    });

    it('a host that answers a Range request with the whole file (200) is read past what arrived, and asked for whole files from then on', async () => {
      const whole = await readFile(join(root, 'repo', SUB, file));
      const cut = Math.floor(whole.byteLength / 4);
      server.faults.set(path, { sequence: [{ truncateAt: cut }, { truncateAt: 2 * cut }] });
      server.ranges = false;
      server.requests.length = 0;
      const events: number[] = [];
      let bytes: Uint8Array;
      try {
        bytes = await open({ retryDelayMs: 1 }).read(file, (loaded) => events.push(loaded));
      } finally {
        server.faults.delete(path);
        server.ranges = true;
      }
      expect(Buffer.from(bytes).equals(whole)).toBe(true);
      // one Range request, answered 200: the fallback came from the host's answer
      expect(gets().map((r) => [r.range ?? null, r.status])).toEqual([[null, 200], [`bytes=${cut}-`, 200], [null, 200]]);
      for (let i = 1; i < events.length; i++) expect(events[i]).toBeGreaterThan(events[i - 1]);
      expect(events.at(-1)).toBe(whole.byteLength);
    });

    it('resumes that keep meeting network errors fail naming the file after maxStalls, every one of them still a Range request', async () => {
      const size = (await stat(join(root, 'repo', SUB, file))).size;
      const cut = 150_000;
      server.faults.set(path, { sequence: [{ truncateAt: cut }, ...Array.from({ length: 10 }, () => ({ reset: true as const }))] });
      server.requests.length = 0;
      const err = await open({ maxStalls: 3, retryDelayMs: 1 })
        .read(file)
        .catch((e: unknown) => e)
        .finally(() => server.faults.delete(path));
      expect(err).toBeInstanceOf(ModelLoadError);
      expect(err).toMatchObject({ file, failure: 'unreachable' });
      expect((err as Error).message).toMatch(new RegExp(`network error after ${cut} of ${size} bytes from http://127\\.0\\.0\\.1:\\d+/${REPO}/resolve/main/${SUB}/${file}, 4 attempts in a row`));
      expect(gets().map((r) => r.range ?? null)).toEqual([null, `bytes=${cut}-`, `bytes=${cut}-`, `bytes=${cut}-`]);
    });
  });

  it('a download that keeps failing without progress fails naming the file, stores nothing, and the next load fetches only that file', async () => {
    const dir = join(root, 'cache-interrupted');
    const cache = new FileCache(nodeCacheBackend(dir));
    const path = `/${REPO}/resolve/main/${SUB}/transformer/model.onnx_data`;
    // every answer is cut at the same byte, and the server cannot resume: no attempt gets further
    server.faults.set(path, { truncateAt: 100_000 });
    server.ranges = false;
    server.requests.length = 0;
    const engine = createNodeEngine({ fileCache: cache });
    const err = await engine.load(hub(server)).catch((e: unknown) => e);
    server.ranges = true;
    expect(err).toBeInstanceOf(ModelLoadError);
    expect((err as ModelLoadError).file).toBe('transformer/model.onnx_data');
    expect((err as Error).message).toMatch(/download interrupted after 100000 of \d+ bytes and 5 attempts without progress/);
    expect(modelGets().filter((r) => r.path === path)).toHaveLength(5);
    expect((await cache.backend.list()).some((e) => e.key.endsWith('transformer/model.onnx_data'))).toBe(false);

    server.faults.delete(path);
    server.requests.length = 0;
    await engine.load(hub(server));
    // every other file (graphs, configs, CLIP-G's data) was stored by the failed load
    expect(modelGets().map((r) => r.path)).toEqual([path]);
  });

  it('a model that cannot fit is refused before its weights download, with the numbers; the loaded model keeps working', async () => {
    const engine = await loadTinyEngine();
    server.requests.length = 0;
    const err = await createNodeEngine().load(hub(server), undefined, { fit: { memoryBytes: 1_000_000 } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelTooLargeError);
    expect((err as Error).message).toMatch(/needs ~\d+(\.\d)? MB of GPU memory \(1\.6 MB of weights \+ .* for the smallest image, 16×16; its default is 64×64\); this adapter offers 976\.6 KB\. Try: load it without T5/);
    // only configs, graphs (to find their data files) and HEADs: no external weights were fetched
    expect(modelGets().some((r) => /onnx(_data|\.data)$/.test(r.path))).toBe(false);
    const sameEngineErr = await engine.load(hub(server), undefined, { fit: { memoryBytes: 1_000_000 } }).catch((e: unknown) => e);
    expect(sameEngineErr).toBeInstanceOf(ModelTooLargeError);
    expect(engine.model!.info.id).toBe('tiny-sd3');
    expect((await engine.generate({ prompt: 'still here', seed: 2 })).rgba.length).toBe(64 * 64 * 4);
  });

  it('a 404 or a garbage file names the file; the loaded model keeps working', async () => {
    const engine = createNodeEngine();
    await engine.load({ kind: 'path', path: TINY_MODEL_DIR });
    const base = `/${REPO}/resolve/main/${SUB}`;
    server.faults.set(`${base}/transformer/model.onnx_data`, 404);
    await expect(engine.load(hub(server))).rejects.toMatchObject({ code: 'model_load', file: 'transformer/model.onnx_data' });
    server.faults.clear();
    server.faults.set(`${base}/vae_decoder/model.onnx`, { body: new TextEncoder().encode('<html>Not an ONNX file</html>') });
    await expect(engine.load(hub(server))).rejects.toMatchObject({ code: 'model_load', file: 'vae_decoder/model.onnx' });
    server.faults.clear();
    server.faults.set(`${base}/model_index.json`, { body: new TextEncoder().encode('{"oops": ') });
    await expect(engine.load(hub(server))).rejects.toMatchObject({ code: 'model_load', file: 'model_index.json' });
    server.faults.clear();
    expect(engine.model!.info.id).toBe('tiny-sd3');
    expect((await engine.generate({ prompt: 'old model', seed: 3 })).rgba.length).toBe(64 * 64 * 4);
  });
});

describe('sharded external data', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sd3-shard-'));
    await cp(TINY_MODEL_EXTERNAL_DIR, dir, { recursive: true });
  });
  afterAll(async () => rm(dir, { recursive: true, force: true }));

  it('a data file over the buffer limit is refused naming it and the re-shard script; re-sharded, the same model gives the same image', async () => {
    const limit = { maxFileBytes: 300_000 }; // the tiny transformer's data is 458,752 bytes
    const engine: Engine = createNodeEngine();
    const err = await engine.load({ kind: 'path', path: dir }, undefined, { fit: limit }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'model_load', file: 'transformer/model.onnx_data' });
    expect((err as Error).message).toMatch(/npm run reshard/);

    const reports = await reshard(dir, 200 * 1024);
    expect(reports.map((r) => [r.component.split('/').at(-1), r.shards.length])).toEqual([
      ['text_encoder_2', 2],
      ['transformer', 3],
    ]);
    const files = await filesUnder(dir);
    expect(files).toContain('transformer/model.onnx_data.002');
    expect(files).not.toContain('transformer/model.onnx_data');
    for (const r of reports) for (const s of r.shards) expect(s.bytes).toBeLessThanOrEqual(200 * 1024);

    await engine.load({ kind: 'path', path: dir }, undefined, { fit: limit });
    const local = await loadTinyEngine();
    const [a, b] = await Promise.all([engine.generate({ prompt: 'sharded', seed: 4 }), local.generate({ prompt: 'sharded', seed: 4 })]);
    expect(maxPixelDiff(a.rgba, b.rgba)).toBe(0);
  });
});

describe('graph inspection and shader-f16', () => {
  it('reads every initializer, its type and its external reference as onnx-proto does', async () => {
    for (const dir of [TINY_MODEL_DIR, TINY_MODEL_EXTERNAL_DIR]) {
      for (const f of (await filesUnder(dir)).filter((p) => p.endsWith('model.onnx'))) {
        const bytes = new Uint8Array(await readFile(join(dir, f)));
        const ours = graphInitializers(bytes);
        const theirs = onnx.ModelProto.decode(bytes).graph!.initializer!;
        expect(ours.map((t) => t.name)).toEqual(theirs.map((t) => t.name));
        expect(ours.map((t) => t.dataType)).toEqual(theirs.map((t) => t.dataType));
        expect(ours.map((t) => t.dims)).toEqual(theirs.map((t) => (t.dims ?? []).map(Number)));
        expect(ours.map((t) => t.external?.location ?? null)).toEqual(theirs.map((t) => t.externalData?.find((e) => e.key === 'location')?.value ?? null));
      }
    }
    expect(() => graphInitializers(new TextEncoder().encode('<html>'))).toThrow();
  });

  it('refuses fp16 weights on an adapter without shader-f16, naming the component, before any session', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sd3-f16-'));
    try {
      await cp(TINY_MODEL_DIR, dir, { recursive: true });
      const path = join(dir, 'vae_decoder', 'model.onnx');
      const model = onnx.ModelProto.decode(await readFile(path));
      model.graph!.initializer!.push(onnx.TensorProto.create({ name: 'unused_half', dims: [2], dataType: ONNX_DTYPE.FLOAT16, rawData: new Uint8Array(4) }));
      const bytes = onnx.ModelProto.encode(model).finish();
      await writeFile(path, bytes);
      expect(hasHalfPrecisionWeights(bytes)).toBe(true);
      expect(hasHalfPrecisionWeights(new Uint8Array(await readFile(join(TINY_MODEL_DIR, 'vae_decoder', 'model.onnx'))))).toBe(false);
      const gpuWithout = createNodeEngine({ backend: 'webgpu', deviceFit: { features: [] } });
      const err = await gpuWithout.load({ kind: 'path', path: dir }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'model_load', file: 'vae_decoder/model.onnx' });
      expect((err as Error).message).toMatch(/shader-f16/);
      // on wasm the same files are not refused for it
      await createNodeEngine().load({ kind: 'path', path: dir });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('export contract', () => {
  it('a graph whose input the engine cannot feed is refused at load, naming the file and the input; the loaded model keeps working', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sd3-contract-'));
    try {
      await cp(TINY_MODEL_DIR, dir, { recursive: true });
      const path = join(dir, 'transformer', 'model.onnx');
      const model = onnx.ModelProto.decode(await readFile(path));
      const input = model.graph!.input!.find((i) => i.name === 'timestep')!;
      input.name = 't';
      for (const n of model.graph!.node!) n.input = n.input!.map((x) => (x === 'timestep' ? 't' : x));
      await writeFile(path, onnx.ModelProto.encode(model).finish());
      const engine = await loadTinyEngine();
      const err = await engine.load({ kind: 'path', path: dir }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'model_load', file: 'transformer/model.onnx' });
      expect((err as Error).message).toMatch(/has no input timestep \(inputs: hidden_states, encoder_hidden_states, pooled_projections, t\)/);
      expect(engine.model!.info.id).toBe('tiny-sd3');
      expect((await engine.generate({ prompt: 'still serving', seed: 1, steps: 1 })).rgba.length).toBe(64 * 64 * 4);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('device fit defaults', () => {
  it('wasm keeps its 4 GB whatever GPU memory is set; webgpu takes the setting', async () => {
    const { defaultDeviceFit, WASM_MEMORY_BYTES, DEFAULT_GPU_MEMORY_BYTES } = await import('../../workers/engine/model/device-fit.ts');
    expect(defaultDeviceFit('wasm', { memoryBytes: 24 * 1024 ** 3 }).memoryBytes).toBe(WASM_MEMORY_BYTES);
    expect(defaultDeviceFit('wasm', { memoryBytes: 1e6 }).memoryBytes).toBe(1e6);
    expect(defaultDeviceFit('webgpu', { memoryBytes: 24 * 1024 ** 3 }).memoryBytes).toBe(24 * 1024 ** 3);
    expect(defaultDeviceFit('webgpu').memoryBytes).toBe(DEFAULT_GPU_MEMORY_BYTES);
  });
});

describe('weights from a server that leaves lengths out of HEAD', () => {
  it('counts the bytes really read, not the sizes the server announced', async () => {
    const { nodeFolderFiles } = await import('../../workers/engine/model/node-folder-files.ts');
    const folder = nodeFolderFiles(TINY_MODEL_EXTERNAL_DIR, 'no-lengths');
    // a compressed response's HEAD has no Content-Length: UrlModelFiles then reports 0
    const files = { ...folder, id: folder.id, read: folder.read.bind(folder), exists: folder.exists.bind(folder), size: async (p: string) => ((await folder.size(p)) === null ? null : 0) };
    const engine = createNodeEngine();
    await engine.load(files);
    let onDisk = 0;
    for (const c of ['text_encoder', 'text_encoder_2', 'text_encoder_3', 'transformer', 'vae_decoder', 'vae_encoder']) {
      for (const f of await readdir(join(TINY_MODEL_EXTERNAL_DIR, c))) if (f.startsWith('model.onnx')) onDisk += (await stat(join(TINY_MODEL_EXTERNAL_DIR, c, f))).size;
    }
    expect(engine.status().weightBytes).toBe(onDisk);
    await engine.unload();
  });
});
