// Memory on a model switch: the engine's ledger counts every model resident
// on the device; a switch whose new model does not fit beside the old one
// downloads the new one into the cache while the old one serves, then
// releases the old one (after its running requests end, or once they are
// taken with 'rerun') before the new model's first session is made; with
// room for both it loads while the old one serves; a model that cannot fit
// even alone is refused with numbers and the old one keeps serving. Real
// onnxruntime sessions on the tiny models (the same weights in two layouts,
// two model ids), with the GPU memory setting lowered to fit one at a time.
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { GenerateResult } from '../../workers/engine/api/types.ts';
import type { Engine } from '../../workers/engine/engine.ts';
import { ModelNotLoadedError, ModelTooLargeError } from '../../workers/engine/errors.ts';
import { RESERVE_BYTES } from '../../workers/engine/memory/budget.ts';
import { smallestRequestBytes } from '../../workers/engine/memory/footprint.ts';
import type { Feeds } from '../../workers/engine/model/component-session.ts';
import { FileCache } from '../../workers/engine/model/file-cache.ts';
import { nodeFileCache } from '../../workers/engine/model/node-file-cache.ts';
import { createNodeEngine } from '../../workers/engine/node.ts';
import { cpuRuntime } from '../../workers/engine/runtime/node-runtime.ts';

/** The onnxruntime the engines here run on (native, CPU). */
const ort = cpuRuntime().ort;
import { startModelServer, type ModelServer } from '../helpers/model-server.ts';
import { maxPixelDiff, newTinyEngine, TINY_MODEL_DIR, TINY_MODEL_EXTERNAL_DIR } from '../helpers/tiny-engine.ts';

const OLD = { kind: 'path', path: TINY_MODEL_DIR } as const;
const NEW = { kind: 'path', path: TINY_MODEL_EXTERNAL_DIR } as const;
/** Small requests: the lowered budget leaves room for these beside one model. */
const req = (id: string, seed: number, steps = 6) => ({ id, prompt: `switch memory ${seed}`, seed, steps, width: 16, height: 16, guidance: 0 });

/** The events that matter, in the order they really happen. */
type Event = 'stop-old' | 'release-old' | 'released-old' | 'create' | 'first-step';

/** Counts every onnxruntime session made from now on (until restored). */
function watchCreates(events: Event[], onCreate?: () => void): () => void {
  const S = ort.InferenceSession as unknown as { create: (...a: unknown[]) => Promise<unknown> };
  const create = S.create;
  S.create = (...a: unknown[]) => {
    events.push('create');
    onCreate?.();
    return create.apply(S, a);
  };
  return () => {
    S.create = create;
  };
}

/** Records when the loaded model stops taking work (its queue is taken off) and when it is released. */
function watchOldModel(engine: Engine, events: Event[]): { stopped: Promise<void>; released: Promise<void> } {
  const model = engine.model!;
  const il = (engine as unknown as { interleaver: { takeQueued(): unknown[] } }).interleaver;
  const takeQueued = il.takeQueued.bind(il);
  let stop!: () => void;
  const stopped = new Promise<void>((r) => (stop = r));
  il.takeQueued = () => {
    events.push('stop-old');
    stop();
    return takeQueued();
  };
  const release = model.release;
  let done!: () => void;
  const released = new Promise<void>((r) => (done = r));
  model.release = async () => {
    events.push('release-old');
    await release();
    events.push('released-old');
    done();
  };
  return { stopped, released };
}

/** Holds the loaded model's transformer after its `after`-th run until `until` settles: a request surely runs when the switch comes. */
function holdTransformer(engine: Engine, after: number, until: Promise<unknown>): void {
  const t = engine.model!.transformer;
  const run = t.run.bind(t);
  let runs = 0;
  t.run = async (feeds: Feeds, names?: readonly string[]) => {
    if (++runs > after) await until;
    return run(feeds, names);
  };
}

/** A GPU memory setting that holds either tiny model and a small request, never both models. */
async function oneModelBudget(): Promise<number> {
  const probe = await newTinyEngine();
  const { dims, info } = probe.model!;
  const w = info.weightBytes;
  await probe.unload();
  // one model: weights + reserve + its smallest request, and half a model to spare; two: a whole model more
  return Math.ceil(w * 1.01) + RESERVE_BYTES + smallestRequestBytes(dims, info.limits.minSize) + Math.floor(w / 2);
}

/** A GPU memory setting for one model, an empty download cache and a Hub server with the new model (switch/external), for a switch that downloads. */
async function withSwitchServer(test: (c: { memoryBytes: number; cacheDir: string; server: ModelServer }) => Promise<void>): Promise<void> {
  const memoryBytes = await oneModelBudget();
  const cacheDir = await mkdtemp(join(tmpdir(), 'switch-download-'));
  const server = await startModelServer({ repos: [{ repo: 'switch/external', folder: TINY_MODEL_EXTERNAL_DIR }] });
  try {
    await test({ memoryBytes, cacheDir, server });
  } finally {
    await server.close();
    await rm(cacheDir, { recursive: true, force: true });
  }
}

let restore: (() => void) | null = null;
afterEach(() => {
  restore?.();
  restore = null;
});

describe('model switch within the memory budget', () => {
  it('both models do not fit: the old model stops, its running request finishes, it is released, and only then are the new sessions made', async () => {
    const memoryBytes = await oneModelBudget();
    const engine = await newTinyEngine({ deviceFit: { memoryBytes }, maxActive: 1 });
    const from = engine.model!.info.id;
    const oldWeights = engine.model!.info.weightBytes;
    expect(engine.status().memory).toMatchObject({ residentWeightBytes: oldWeights, models: [{ id: from, weightBytes: oldWeights, state: 'loaded' }] });
    const events: Event[] = [];
    const ledgerAt: number[] = [];
    const { stopped } = watchOldModel(engine, events);
    // the running request waits after its first step until the old model has stopped taking work
    holdTransformer(engine, 1, stopped);
    let stepped!: () => void;
    const firstStep = new Promise<void>((r) => (stepped = r));
    const running = engine.generate(req('running', 1, 8), { onProgress: (e) => e.status === 'step' && stepped() });
    const queued = engine.generate(req('queued', 2));
    await firstStep;
    events.push('first-step');
    restore = watchCreates(events, () => ledgerAt.push(engine.status().memory!.residentWeightBytes));
    const load = engine.load(NEW);
    const during = engine.generate(req('during', 3));
    const info = await load;
    restore();
    restore = null;
    const [r0, r1, r2] = await Promise.all([running, queued, during]);
    // the order of real events: stop, release, then every session of the new model
    const firstCreate = events.indexOf('create');
    expect(events.slice(0, firstCreate)).toEqual(['first-step', 'stop-old', 'release-old', 'released-old']);
    expect(events.filter((e) => e === 'create').length).toBe(6); // text encoders, transformer, VAE decoder and encoder
    // while the new sessions were made, the ledger held the new model alone
    for (const bytes of ledgerAt) expect(bytes).toBeLessThan(oldWeights + info.weightBytes);
    expect(Math.max(...ledgerAt)).toBeLessThanOrEqual(memoryBytes);
    // the running one finished on the old model with its image; the queued one and the one sent during the load ran on the new one
    expect(r0.metadata.modelId).toBe(from);
    expect(r0.rgba.length).toBe(16 * 16 * 4);
    expect([r1.metadata.modelId, r2.metadata.modelId]).toEqual([info.id, info.id]);
    // the same weights: every image is the undisturbed one
    const reference = await newTinyEngine();
    const expected = await Promise.all([reference.generate(req('a', 1, 8)), reference.generate(req('b', 2)), reference.generate(req('c', 3))]);
    [r0, r1, r2].forEach((r, i) => expect(maxPixelDiff(r.rgba, expected[i].rgba)).toBe(0));
    await engine.idle();
    expect(engine.status()).toMatchObject({ requestsFailed: 0, requestsCancelled: 0, requestsServed: 3, requestsQueued: 0, memory: { residentWeightBytes: info.weightBytes, models: [{ id: info.id, state: 'loaded' }], lastLoad: { model: info.id, order: 'release-first', budgetBytes: memoryBytes } } });
    await Promise.all([engine.unload(), reference.unload()]);
  });

  it('both models do not fit and the new one downloads: the old model serves its queue until every file of the new one is in the cache, and only then is it released', async () => {
    await withSwitchServer(async ({ memoryBytes, cacheDir, server }) => {
      const engine = createNodeEngine({ deviceFit: { memoryBytes }, fileCache: nodeFileCache(cacheDir), maxActive: 1 });
      await engine.load(OLD);
      const from = engine.model!.info.id;
      const events: string[] = [];
      const { released } = watchOldModel(engine, events as Event[]);
      const gets = () => server.requests.filter((q) => q.method === 'GET').length;
      let getsBeforeSessions: number | undefined;
      restore = watchCreates(events as Event[], () => (getsBeforeSessions ??= gets()));
      // one request runs, one waits behind it; the new model's weight file is held until the waiting one has stepped
      let stepped!: () => void;
      const queuedStepped = new Promise<void>((r) => (stepped = r));
      server.faults.set('/switch/external/resolve/main/text_encoder_2/model.onnx.data', { until: queuedStepped });
      const running = engine.generate(req('running', 51));
      const queued = engine.generate(req('queued', 52), {
        onProgress: (p) => {
          if (p.status !== 'step' || events.includes('queued stepped')) return;
          events.push('queued stepped');
          stepped();
        },
      });
      const done: { file: string; cached: boolean | undefined }[] = [];
      const info = await engine.load({ kind: 'hub', repo: 'switch/external', host: server.url }, (e) => {
        if (e.status !== 'done') return;
        done.push({ file: e.file!, cached: e.cached });
        if (e.file?.endsWith('.data') && !events.includes(`stored ${e.file}`)) events.push(`stored ${e.file}`);
      });
      await released;
      expect(events.slice(0, events.indexOf('create'))).toEqual(['queued stepped', 'stored text_encoder_2/model.onnx.data', 'stop-old', 'release-old', 'released-old']);
      expect(engine.status().memory!.lastLoad).toMatchObject({ model: info.id, order: 'release-first' });
      // every file the load reads (tokenizers too) was fetched before the release: none after its first session
      expect(getsBeforeSessions).toBe(gets());
      expect(done.filter((d) => d.file.startsWith('tokenizer'))).toEqual(expect.arrayContaining([{ file: 'tokenizer/tokenizer.json', cached: false }]));
      // downloaded by this load, then read back from the cache: never reported as cached
      expect(done.filter((d) => d.cached)).toEqual([]);
      // both ran on the old model, undisturbed
      const [r0, r1] = await Promise.all([running, queued]);
      expect([r0.metadata.modelId, r1.metadata.modelId]).toEqual([from, from]);
      const reference = await newTinyEngine();
      expect(maxPixelDiff(r1.rgba, (await reference.generate(req('ref', 52))).rgba)).toBe(0);
      // the new model serves, its data file fetched once (the sessions read it from the cache)
      expect((await engine.generate(req('after', 53, 3))).metadata.modelId).toBe(info.id);
      expect(server.requests.filter((q) => q.method === 'GET' && q.path.endsWith('model.onnx.data'))).toHaveLength(1);
      await Promise.all([engine.unload(), reference.unload()]);
    });
  });

  it("a download that fails during a switch costs nothing: the old model was never released and serves on, with no reload", async () => {
    await withSwitchServer(async ({ memoryBytes, cacheDir, server }) => {
      const engine = createNodeEngine({ deviceFit: { memoryBytes }, fileCache: nodeFileCache(cacheDir) });
      await engine.load(OLD);
      const from = engine.model!;
      const events: Event[] = [];
      watchOldModel(engine, events);
      restore = watchCreates(events);
      // the size (HEAD) is answered, the download (GET) is refused
      server.faults.set('/switch/external/resolve/main/text_encoder_2/model.onnx.data', { sequence: [500] });
      const e = await engine.load({ kind: 'hub', repo: 'switch/external', host: server.url }).catch((x: unknown) => x);
      expect(e).toMatchObject({ code: 'model_load', file: 'text_encoder_2/model.onnx.data' });
      expect(events).toEqual([]);
      expect(engine.model).toBe(from);
      expect((await engine.generate(req('after', 54, 3))).metadata.modelId).toBe(from.info.id);
      expect(engine.status()).toMatchObject({ noModelReason: null, requestsFailed: 0, memory: { models: [{ id: from.info.id, state: 'loaded' }] } });
      // no switch happened: the last one recorded is still the old model's own load
      expect(engine.status().memory!.lastLoad).toMatchObject({ model: from.info.id, order: 'beside' });
      await engine.unload();
    });
  });

  it('asking for the loaded model again while a switch downloads gives the switch up: the loaded model stays, nothing is released, no session is made', async () => {
    await withSwitchServer(async ({ memoryBytes, cacheDir, server }) => {
      const engine = createNodeEngine({ deviceFit: { memoryBytes }, fileCache: nodeFileCache(cacheDir) });
      await engine.load(OLD);
      const from = engine.model!;
      const events: Event[] = [];
      watchOldModel(engine, events);
      restore = watchCreates(events);
      let letGo!: () => void;
      server.faults.set('/switch/external/resolve/main/text_encoder_2/model.onnx.data', { until: new Promise<void>((r) => (letGo = r)) });
      let downloading!: () => void;
      const started = new Promise<void>((r) => (downloading = r));
      const switching = engine
        .load({ kind: 'hub', repo: 'switch/external', host: server.url }, (e) => {
          if (e.status === 'initiate' && e.file === 'text_encoder_2/model.onnx.data') downloading();
        })
        .catch((x: unknown) => x);
      await started;
      // a request sent now waits for the load under way, then runs on the model that stays
      const waiting = engine.generate(req('waiting', 55, 3));
      expect(await engine.load(OLD)).toBe(from.info);
      letGo();
      expect(await switching).toMatchObject({ name: 'LoadAbortedError', message: expect.stringContaining('which is loaded') });
      expect((await waiting).metadata.modelId).toBe(from.info.id);
      expect(events).toEqual([]);
      expect(engine.model).toBe(from);
      expect(engine.status()).toMatchObject({ noModelReason: null, memory: { models: [{ id: from.info.id, state: 'loaded' }], lastLoad: { model: from.info.id } } });
      await engine.unload();
    });
  });

  it('a cache that refuses the new model\'s files during a switch: storing stops at the first refusal, that file is not written again but read from the network and reported done once, and the new model loads', async () => {
    await withSwitchServer(async ({ memoryBytes, cacheDir, server }) => {
      const disk = nodeFileCache(cacheDir).backend;
      const writes: string[] = [];
      // the disk fills up: every weight file fails after its first chunk (a quota error mid-write)
      const full = new FileCache({
        ...disk,
        write: async (key, modelId, chunks) => {
          if (!key.endsWith('.data')) return disk.write(key, modelId, chunks);
          writes.push(key.replace(/^.*\/resolve\/[^/]+\//, '')); // the path in the repo
          const it = chunks[Symbol.asyncIterator]();
          await it.next();
          await it.return?.();
          throw new DOMException('the quota has been exceeded', 'QuotaExceededError');
        },
      });
      const engine = createNodeEngine({ deviceFit: { memoryBytes }, fileCache: full });
      await engine.load(OLD);
      const events: Event[] = [];
      watchOldModel(engine, events);
      let writesBeforeSessions: string[] | undefined;
      restore = watchCreates(events, () => (writesBeforeSessions ??= [...writes]));
      const done: string[] = [];
      const info = await engine.load({ kind: 'hub', repo: 'switch/external', host: server.url }, (e) => {
        if (e.status === 'done') done.push(e.file!);
      });
      // one refused write before the release, and that file was not tried again: read from the network once more
      expect(writesBeforeSessions).toHaveLength(1);
      expect(writes.filter((w) => w === writesBeforeSessions![0])).toHaveLength(1);
      const gets = (f: string) => server.requests.filter((q) => q.method === 'GET' && q.path.endsWith(f)).length;
      expect(gets(writesBeforeSessions![0])).toBe(2);
      // the refused file is reported done once, with its bytes, by the read that loaded it
      expect(done.filter((f) => f === writesBeforeSessions![0])).toHaveLength(1);
      expect((await engine.generate(req('after', 56, 3))).metadata.modelId).toBe(info.id);
      await engine.unload();
    });
  });

  it("with onSwitch 'rerun' the running request is taken off, the old model is released at once, and the request runs again on the new model with the same image", async () => {
    const memoryBytes = await oneModelBudget();
    const engine = await newTinyEngine({ deviceFit: { memoryBytes } });
    const events: Event[] = [];
    const { stopped } = watchOldModel(engine, events);
    holdTransformer(engine, 1, stopped);
    let stepped!: () => void;
    const firstStep = new Promise<void>((r) => (stepped = r));
    const running = engine.generate(req('rerun', 7, 10), { onProgress: (e) => e.status === 'step' && stepped() });
    await firstStep;
    restore = watchCreates(events);
    const info = await engine.load(NEW, undefined, { onSwitch: 'rerun' });
    const r = await running;
    expect(events.slice(0, events.indexOf('create'))).toEqual(['stop-old', 'release-old', 'released-old']);
    expect(r.metadata.modelId).toBe(info.id);
    const reference = await newTinyEngine();
    expect(maxPixelDiff(r.rgba, (await reference.generate(req('x', 7, 10))).rgba)).toBe(0);
    expect(engine.status()).toMatchObject({ requestsFailed: 0, requestsCancelled: 0 });
    await Promise.all([engine.unload(), reference.unload()]);
  });

  it('with room for both, the new model loads while the old one serves: sessions are made before the old model is released, and the ledger counts both', async () => {
    const engine = await newTinyEngine({ maxActive: 1 });
    const from = engine.model!;
    const events: Event[] = [];
    const ledger: { models: string[]; bytes: number }[] = [];
    const { released } = watchOldModel(engine, events);
    let created!: () => void;
    const firstCreate = new Promise<void>((r) => (created = r));
    // the running request waits until the new model's first session is being made
    holdTransformer(engine, 1, firstCreate);
    let stepped!: () => void;
    const firstStep = new Promise<void>((r) => (stepped = r));
    const running = engine.generate(req('running', 11, 8), { onProgress: (e) => e.status === 'step' && stepped() });
    await firstStep;
    restore = watchCreates(events, () => {
      const m = engine.status().memory!;
      ledger.push({ models: m.models.map((x) => `${x.id}:${x.state}`), bytes: m.residentWeightBytes });
      created();
    });
    const info = await engine.load(NEW);
    const r = await running;
    await released;
    expect(events.indexOf('create')).toBeLessThan(events.indexOf('release-old'));
    expect(r.metadata.modelId).toBe(from.info.id);
    // both models resident at once, and the ledger said so
    expect(ledger[0].models).toEqual([`${from.info.id}:loaded`, `${info.id}:loading`]);
    expect(ledger[0].bytes).toBeGreaterThan(from.info.weightBytes + info.weightBytes * 0.9);
    expect(engine.status().memory!.lastLoad).toMatchObject({ model: info.id, order: 'beside' });
    await engine.idle();
    expect(engine.status().memory).toMatchObject({ residentWeightBytes: info.weightBytes, models: [{ id: info.id, state: 'loaded' }] });
    await engine.unload();
  });

  it('a model that cannot fit even alone is refused with numbers, naming it, before anything is released: the old model keeps serving', async () => {
    const engine = await newTinyEngine();
    const from = engine.model!.info.id;
    const events: Event[] = [];
    watchOldModel(engine, events);
    restore = watchCreates(events);
    const running = engine.generate(req('keeps', 21, 4));
    // this load's GPU memory setting: one model's weights, not its smallest request
    const memoryBytes = RESERVE_BYTES + 2 * 1024 ** 2;
    const e = await engine.load(NEW, undefined, { fit: { memoryBytes } }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ModelTooLargeError);
    const message = (e as Error).message;
    expect(message).toMatch(/^tiny-sd3-external: this model needs ~\d+\.\d MB of GPU memory \(1\.\d MB of weights \+ \d+\.\d MB for the smallest image, 16×16; its default is 64×64\); this adapter offers 66\.0 MB\./);
    expect(message).toContain(`The loaded model, ${from}, keeps serving.`);
    expect((e as ModelTooLargeError).availableBytes).toBe(memoryBytes);
    expect(events).toEqual([]);
    expect((await running).metadata.modelId).toBe(from);
    expect((await engine.generate(req('after', 22, 3))).metadata.modelId).toBe(from);
    expect(engine.status()).toMatchObject({ model: { id: from }, memory: { models: [{ id: from, state: 'loaded' }] } });
    await engine.unload();
  });

  it('a switch aborted after the old model was released loads the old model again; the requests that waited run on it', async () => {
    const memoryBytes = await oneModelBudget();
    const engine = await newTinyEngine({ deviceFit: { memoryBytes } });
    const from = engine.model!.info.id;
    const events: Event[] = [];
    const { released } = watchOldModel(engine, events);
    const controller = new AbortController();
    void released.then(() => controller.abort());
    restore = watchCreates(events);
    const load = engine.load(NEW, undefined, {}, controller.signal);
    const waiting = engine.generate(req('waits', 31, 3));
    await expect(load).rejects.toMatchObject({ code: 'load_aborted' });
    // no session of the new model was made; the old one is being loaded again and the request waits for it
    expect(events).toEqual(['stop-old', 'release-old', 'released-old']);
    expect(engine.loadingSource).toBe(TINY_MODEL_DIR);
    const r = await waiting;
    expect(r.metadata.modelId).toBe(from);
    expect(engine.model!.info.id).toBe(from);
    expect(engine.status()).toMatchObject({ noModelReason: null, requestsFailed: 0, memory: { models: [{ id: from, state: 'loaded' }] } });
    await engine.unload();
  });

  it('when the new model fails to load and the old one cannot be loaded again, no model is loaded, and status and the waiting requests say why', async () => {
    const memoryBytes = await oneModelBudget();
    const root = await mkdtemp(join(tmpdir(), 'switch-memory-'));
    const oldDir = join(root, 'old');
    const badDir = join(root, 'bad');
    await cp(TINY_MODEL_DIR, oldDir, { recursive: true });
    await cp(TINY_MODEL_EXTERNAL_DIR, badDir, { recursive: true });
    // the new model plans fine, but its external data is cut short: its session cannot be made
    const { truncate, stat } = await import('node:fs/promises');
    const data = join(badDir, 'text_encoder_2', 'model.onnx.data');
    await truncate(data, Math.floor((await stat(data)).size / 2));
    const engine = createNodeEngine({ deviceFit: { memoryBytes } });
    await engine.load({ kind: 'path', path: oldDir });
    const events: Event[] = [];
    const { released } = watchOldModel(engine, events);
    // the old model's folder goes once its sessions are released: it cannot come back
    void released.then(() => rm(oldDir, { recursive: true, force: true }));
    const load = engine.load({ kind: 'path', path: badDir });
    const waiting = engine.generate(req('waits', 41, 3)).catch((x: unknown) => x);
    await expect(load).rejects.toMatchObject({ code: 'model_load' });
    const e = (await waiting) as Error;
    expect(e).toBeInstanceOf(ModelNotLoadedError);
    expect(e.message).toMatch(/^no model is loaded: \S+ was released to make room for \S*bad, whose load failed \(.*text_encoder_2.*\); \S+ is being loaded again, and that failed too \(.+\)/);
    const status = engine.status();
    expect(status.model).toBeNull();
    expect(status.noModelReason).toBe(e.message.replace('no model is loaded: ', ''));
    expect(status.memory).toMatchObject({ residentWeightBytes: 0, models: [] });
    await expect(engine.generate(req('later', 42, 3))).rejects.toBeInstanceOf(ModelNotLoadedError);
    // a new load works as ever
    const info = await engine.load(NEW);
    expect((await engine.generate(req('fresh', 43, 3))).metadata.modelId).toBe(info.id);
    expect(engine.status().noModelReason).toBeNull();
    await engine.unload();
    await rm(root, { recursive: true, force: true });
  });
});

export type { GenerateResult };
