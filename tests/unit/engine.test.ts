// The engine over one copy of the weights: isolation of request-scoped views,
// guidance, release of per-request state, defaults, and bad input.
import { decode as decodePng } from 'fast-png';
import { describe, expect, it } from 'vitest';
import type { GenerateResult } from '../../workers/engine/api/types.ts';
import { EngineError, InvalidRequestError, ModelLoadError } from '../../workers/engine/errors.ts';
import { familyDefaults, parseTransformerConfig, parseVaeConfig } from '../../workers/engine/model/model-config.ts';
import { createNodeEngine } from '../../workers/engine/node.ts';
import { loadTinyEngine, maxPixelDiff, newTinyEngine, TINY_MODEL_DIR, TINY_MODEL_EXTERNAL_DIR } from '../helpers/tiny-engine.ts';

describe('request isolation', () => {
  it('seed S alone gives the same pixels as seed S among 7 other requests', async () => {
    const engine = await loadTinyEngine();
    const alone = await engine.generate({ prompt: 'a lighthouse at dusk', seed: 1234 });
    const others = Array.from({ length: 7 }, (_, i) => engine.generate({ prompt: `other prompt ${i}`, seed: 10 + i, steps: 2 + (i % 5), guidance: i % 2 ? 1 : 6 }));
    const together = engine.generate({ prompt: 'a lighthouse at dusk', seed: 1234 });
    const [t] = await Promise.all([together, ...others]);
    expect(maxPixelDiff(alone.rgba, t.rgba)).toBeLessThanOrEqual(1);
    const other = await engine.generate({ prompt: 'a lighthouse at dusk', seed: 1235 });
    expect(maxPixelDiff(alone.rgba, other.rgba)).toBeGreaterThan(10);
  });

  it('the PNG holds exactly the returned pixels, with full metadata', async () => {
    const engine = await loadTinyEngine();
    const r = await engine.generate({ prompt: 'a red cube', negativePrompt: 'blurry', seed: 5, steps: 3, guidance: 3, width: 96, height: 64 });
    const png = decodePng(new Uint8Array(await r.png.arrayBuffer()));
    expect([png.width, png.height, png.channels]).toEqual([96, 64, 4]);
    expect(Uint8ClampedArray.from(png.data)).toEqual(r.rgba);
    expect(r.metadata).toMatchObject({ prompt: 'a red cube', negativePrompt: 'blurry', seed: 5, steps: 3, guidance: 3, width: 96, height: 64, modelId: 'tiny-sd3', backend: 'cpu', warnings: [] });
    const t = r.metadata.timings;
    expect(t.totalMs).toBeGreaterThanOrEqual(t.queuedMs + t.encodeMs + t.denoiseMs + t.decodeMs - 1); // the parts add up to at most the whole
    expect(new Set(r.rgba).size).toBeGreaterThan(16); // an image, not a flat fill
  });

  it('the negative prompt matters with guidance, not without', async () => {
    const engine = await loadTinyEngine();
    const base = { prompt: 'a tree', seed: 9 };
    const [a, b, c, d] = await Promise.all([
      engine.generate({ ...base, guidance: 5 }),
      engine.generate({ ...base, guidance: 5, negativePrompt: 'snow' }),
      engine.generate({ ...base, guidance: 1 }),
      engine.generate({ ...base, guidance: 1, negativePrompt: 'snow' }),
    ]);
    expect(maxPixelDiff(a.rgba, b.rgba)).toBeGreaterThan(10);
    expect(maxPixelDiff(c.rgba, d.rgba)).toBe(0);
  });

  it('the external-data variant gives identical images', async () => {
    const a = await (await loadTinyEngine()).generate({ prompt: 'a boat', seed: 3 });
    const ext = await newTinyEngine({}, TINY_MODEL_EXTERNAL_DIR);
    const b = await ext.generate({ prompt: 'a boat', seed: 3 });
    expect(maxPixelDiff(a.rgba, b.rgba)).toBe(0);
    await ext.unload();
  });
});

describe('guidance', () => {
  it('guidance 1 runs one branch per step; guidance > 1 runs two', async () => {
    const engine = await newTinyEngine();
    const t = engine.model!.transformer;
    await engine.generate({ prompt: 'x', seed: 1, steps: 3, guidance: 1 });
    expect([t.runs, t.rows]).toEqual([3, 3]);
    await engine.generate({ prompt: 'x', seed: 1, steps: 3, guidance: 7 });
    expect([t.runs, t.rows]).toEqual([6, 9]);
    // guidance 0 (turbo-style) is also one branch
    await engine.generate({ prompt: 'x', seed: 1, steps: 2, guidance: 0 });
    expect(t.rows).toBe(11);
    await engine.unload();
  });
});

describe('release', () => {
  it('after 50 requests (finished, failed and cancelled) per-request bytes are back to zero', async () => {
    const engine = await newTinyEngine();
    const jobs: Promise<GenerateResult | void>[] = [];
    let maxHeld = 0;
    for (let i = 0; i < 50; i++) {
      const p = engine.generate({ id: `r${i}`, prompt: `prompt ${i}`, seed: i, steps: 1 + (i % 4), guidance: i % 3 ? 4 : 1, width: i % 5 ? 64 : 128, height: 64 }, { onProgress: () => (maxHeld = Math.max(maxHeld, engine.status().requestBytes)) });
      jobs.push(p.catch((e) => expect(e).toBeInstanceOf(EngineError)));
    }
    for (let i = 0; i < 50; i += 7) engine.cancel(`r${i}`);
    await Promise.all(jobs);
    const s = engine.status();
    // at its peak the engine held the state of several requests at once: more than the largest one alone
    expect(maxHeld).toBeGreaterThan(2 * (2 * 16 * 16 * 8 * 4 + 2 * (333 * 96 + 64) * 4));
    expect(s.requestBytes).toBe(0);
    expect(s.admittedBytes).toBe(0);
    expect([s.requestsActive, s.requestsQueued]).toEqual([0, 0]);
    expect(s.requestsServed + s.requestsCancelled).toBe(50);
    expect(s.requestsCancelled).toBe(8);
    await engine.unload();
  });
});

describe('model defaults and status', () => {
  it('reports model, backend, counts and bytes', async () => {
    const engine = await newTinyEngine();
    const s0 = engine.status();
    expect(s0.model).toMatchObject({ id: 'tiny-sd3', backend: 'cpu', hasT5: true, defaults: { steps: 4, guidance: 4.5, width: 64, height: 64 } });
    expect(s0.weightBytes).toBeGreaterThan(1_000_000);
    const running = engine.generate({ prompt: 'status', seed: 1 });
    expect(engine.status().requestsQueued + engine.status().requestsActive).toBe(1);
    const r = await running;
    expect(r.metadata.steps).toBe(4); // the model's own default
    expect(engine.status().requestsServed).toBe(1);
    await engine.unload();
  });

  it('family defaults come from the model files (SD3-medium, SD3.5, turbo)', () => {
    const vae = parseVaeConfig({ block_out_channels: [128, 256, 512, 512] });
    const sd3 = parseTransformerConfig({ num_layers: 24, sample_size: 128 });
    expect(familyDefaults({ _name_or_path: 'stabilityai/stable-diffusion-3-medium-diffusers' }, {}, sd3, vae)).toEqual({ family: 'sd3-medium', defaults: { steps: 28, guidance: 7, width: 1024, height: 1024 } });
    expect(familyDefaults({}, { qk_norm: 'rms_norm' }, parseTransformerConfig({ num_layers: 24, qk_norm: 'rms_norm' }), vae).family).toBe('sd3.5-medium');
    const large = parseTransformerConfig({ num_layers: 38 });
    expect(familyDefaults({ _name_or_path: 'stabilityai/stable-diffusion-3.5-large-turbo' }, {}, large, vae).defaults).toMatchObject({ steps: 4, guidance: 0 });
    expect(familyDefaults({}, {}, large, vae).defaults).toMatchObject({ steps: 28, guidance: 3.5 });
  });

  it('"no T5" mode uses zeros for T5 and still generates', async () => {
    const engine = createNodeEngine();
    const info = await engine.load({ kind: 'path', path: TINY_MODEL_DIR }, undefined, { skipT5: true });
    expect(info.hasT5).toBe(false);
    const r = await engine.generate({ prompt: 'a cat', seed: 2 });
    const withT5 = await (await loadTinyEngine()).generate({ prompt: 'a cat', seed: 2 });
    expect(maxPixelDiff(r.rgba, withT5.rgba)).toBeGreaterThan(10);
    await engine.unload();
  });
});

describe('bad input', () => {
  const cases: [string, Record<string, unknown>, string, RegExp][] = [
    ['missing prompt', {}, 'prompt', /non-empty|string/],
    ['empty prompt', { prompt: '   ' }, 'prompt', /non-empty/],
    ['steps 0', { prompt: 'x', steps: 0 }, 'steps', /1\.\.500/],
    ['steps 501', { prompt: 'x', steps: 501 }, 'steps', /1\.\.500/],
    ['steps 2.5', { prompt: 'x', steps: 2.5 }, 'steps', /integer/],
    ['guidance NaN', { prompt: 'x', guidance: NaN }, 'guidance', /finite/],
    ['guidance Infinity', { prompt: 'x', guidance: Infinity }, 'guidance', /finite/],
    ['guidance negative', { prompt: 'x', guidance: -1 }, 'guidance', /0\.\.100/],
    ['width not a multiple of 16', { prompt: 'x', width: 70 }, 'width', /multiple of 16/],
    ['height too large', { prompt: 'x', height: 1024 }, 'height', /16\.\.512/],
    ['seed negative', { prompt: 'x', seed: -1 }, 'seed', /0\.\.4294967295/],
    ['seed too large', { prompt: 'x', seed: 2 ** 32 }, 'seed', /0\.\.4294967295/],
    ['seed fractional', { prompt: 'x', seed: 0.5 }, 'seed', /integer/],
    ['seed a string', { prompt: 'x', seed: '7' }, 'seed', /integer/],
    ['unknown field', { prompt: 'x', sampler: 'ddim' }, 'sampler', /no such field/],
  ];

  it.each(cases)('%s → error naming %s', async (_, request, field, allowed) => {
    const engine = await loadTinyEngine();
    const err = await engine.generate(request).catch((e) => e);
    expect(err).toBeInstanceOf(InvalidRequestError);
    expect(err.field).toBe(field);
    expect(err.message).toMatch(new RegExp(`^${field}: expected`));
    expect(err.message).toMatch(allowed);
  });

  it('bad requests leave the ones in flight untouched', async () => {
    const engine = await loadTinyEngine();
    const reference = await engine.generate({ prompt: 'steady', seed: 77 });
    const good = engine.generate({ prompt: 'steady', seed: 77 });
    const bad = await Promise.all(cases.map(([, r]) => engine.generate(r).catch((e) => e)));
    expect(bad.every((e) => e instanceof InvalidRequestError)).toBe(true);
    expect(maxPixelDiff((await good).rgba, reference.rgba)).toBe(0);
  });

  it('an unknown folder or a missing component names the file, and the loaded model keeps working', async () => {
    const engine = await newTinyEngine();
    const missing = await engine.load({ kind: 'path', path: '/nonexistent/model' }).catch((e) => e);
    expect(missing).toBeInstanceOf(ModelLoadError);
    expect(missing.message).toMatch(/model_index\.json/);
    const { mkdtemp, cp, rm } = await import('node:fs/promises');
    const { tmpdir } = await import('node:os');
    const dir = await mkdtemp(`${tmpdir()}/broken-sd3-`);
    await cp(TINY_MODEL_DIR, dir, { recursive: true });
    await rm(`${dir}/vae_decoder/model.onnx`);
    const broken = await engine.load({ kind: 'path', path: dir }).catch((e) => e);
    expect(broken).toBeInstanceOf(ModelLoadError);
    expect(broken.file).toBe('vae_decoder/model.onnx');
    expect((await engine.generate({ prompt: 'still here', seed: 1 })).metadata.modelId).toBe('tiny-sd3');
    await rm(dir, { recursive: true });
    await engine.unload();
  });

  it('generate before load says to load a model', async () => {
    await expect(createNodeEngine().generate({ prompt: 'x' })).rejects.toThrow(/no model is loaded/);
  });
});
