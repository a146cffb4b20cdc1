// `npm run generate -- --plan`: the memory plan of real-size models, built by
// the project at full depth with sparse external data (right sizes, no
// weights), so it costs nothing to make. Planning reads configs, graphs and
// sizes only: no weight is downloaded.
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { main } from '../../cli/generate.ts';
import { buildModel } from '../../tools/model-builder/build.ts';
import { PRESETS } from '../../tools/model-builder/presets.ts';
import { FolderOutput } from '../../tools/model-builder/weight-store.ts';
import { planModel } from '../../workers/engine/model/load-model.ts';
import { nodeFolderFiles } from '../../workers/engine/model/node-folder-files.ts';
import { tinySpec } from '../helpers/built-models.ts';
import type { PlanReport } from '../../workers/engine/memory/plan-report.ts';
import { buildTemp, type BuiltModel } from '../helpers/built-models.ts';
import { startModelServer, type ModelServer } from '../helpers/model-server.ts';

const GiB = 1024 ** 3;

describe('memory plan of real-size models (npm run generate -- --plan)', () => {
  const built: Record<string, BuiltModel> = {};
  let out: string[];
  let errors: string[];
  beforeAll(async () => {
    for (const name of ['sd3-medium', 'sd3.5-medium'] as const) {
      built[name] = await buildTemp({ preset: PRESETS[name], id: `synthetic/${name}`, weights: 'float16', io: 'float16', attention: 'decomposed', dataFile: () => 'model.onnx_data', sparse: true, withVaeEncoder: false });
    }
    vi.spyOn(console, 'log').mockImplementation((m: string) => void out.push(m));
    vi.spyOn(console, 'error').mockImplementation((m: string) => void errors.push(m));
  });
  afterAll(async () => {
    vi.restoreAllMocks();
    for (const b of Object.values(built)) await b.remove();
  });
  const plan = async (args: string[]) => {
    out = [];
    errors = [];
    const code = await main(['--plan', ...args]);
    return { code, report: out.length ? (JSON.parse(out.join('\n')) as PlanReport) : null, errors: errors.join('\n') };
  };

  it('SD3-medium (fp16, no T5) at 1024² with guidance fits 8 GB, every buffer within 1 GiB', async () => {
    const { code, report } = await plan(['--model', built['sd3-medium'].dir, '--no-t5', '--size', '1024', '--guidance', '7', '--gpu-memory', '8']);
    expect(code).toBe(0);
    expect(report!.verdict).toBe('fits');
    expect(report!.device).toMatchObject({ memoryBytes: 8 * GiB, maxBufferBytes: GiB });
    // the published model's size: a 2.0 B-parameter transformer in fp16 plus both CLIPs and the VAE decoder
    expect(report!.weights.components.transformer.bytes).toBeGreaterThan(4.1e9);
    expect(report!.weights.components.transformer).toMatchObject({ dtype: 'fp16', attentionSites: 24 });
    expect(report!.weights.components.transformer.attentionChunks).toBeGreaterThan(1);
    expect(report!.weights.bytes + report!.request.requestBytes).toBeLessThanOrEqual(8 * GiB);
    expect(report!.request).toMatchObject({ width: 1024, height: 1024, guidance: 7, rows: 2 });
    expect(report!.request.largestBufferBytes).toBeLessThanOrEqual(GiB);
    expect(report!.fitsAtOnce).toBeGreaterThanOrEqual(1);
    expect(report!.largestSize).toBeGreaterThanOrEqual(1024);
    expect(report!.reason).toMatch(/^5\.\d\d GB of weights \+ .* for one 1024×1024 with guidance request fit 8\.00 GB/);
  });

  it('SD3.5-medium (MMDiT-X, fp16, no T5) fits 8 GB at 1024² too', async () => {
    const { code, report } = await plan(['--model', built['sd3.5-medium'].dir, '--no-t5']);
    expect(code).toBe(0);
    expect(report!.family).toBe('sd3.5-medium');
    expect(report!.request).toMatchObject({ width: 1024, height: 1024, guidance: 4.5 });
    expect(report!.weights.components.transformer.attentionSites).toBe(24 + 13); // joint attention in every block, a second one in the first 13
    expect(report!.request.largestBufferBytes).toBeLessThanOrEqual(GiB);
    expect(report!.verdict).toBe('fits');
  });

  it('refuses with numbers what truly cannot fit: T5-XXL alone is over 8 GB in fp16', async () => {
    const { code, report } = await plan(['--model', built['sd3-medium'].dir]);
    expect(code).toBe(1);
    expect(report!.verdict).toBe('refused');
    expect(report!.reason).toMatch(/this model needs ~14\.\d\d GB of GPU memory \(14\.\d\d GB of weights \+ .* for the smallest image, 16×16; its default is 1024×1024\); this adapter offers 8\.00 GB\. Try: load it without T5/);
  });

  it('a size beyond the adapter buffers is refused, naming the largest that fits', async () => {
    const { code, report } = await plan(['--model', built['sd3-medium'].dir, '--no-t5', '--size', '2048']);
    expect(code).toBe(1);
    expect(report!.verdict).toBe('refused');
    expect(report!.reason).toMatch(/one buffer at 2048×2048 with guidance would be .*, over the largest buffer of 1\.00 GB; the largest square size that fits is (\d+)×\1/);
    expect(report!.largestSize).toBeGreaterThanOrEqual(1024);
    expect(report!.largestSize).toBeLessThan(2048);
  });

  it('less GPU memory: the model is refused before any request, with its numbers', async () => {
    const { code, report } = await plan(['--model', built['sd3-medium'].dir, '--no-t5', '--gpu-memory', '4']);
    expect(code).toBe(1);
    expect(report!.reason).toMatch(/needs ~5\.\d\d GB .* this adapter offers 4\.00 GB/);
  });

  it('bad flags name the flag and the allowed range', async () => {
    expect((await plan(['--model', built['sd3-medium'].dir, '--no-t5', '--gpu-memory=0'])).errors).toMatch(/--gpu-memory: expected a number of GB in \(0, 1024\], got 0/);
    const bad = await plan(['--model', built['sd3-medium'].dir, '--no-t5', '--size', '1000']);
    expect(bad.code).toBe(2);
    expect(bad.errors).toMatch(/--width: expected an integer in 16\.\.3072, a multiple of 16, got 1000/);
    expect((await plan(['--model', built['sd3-medium'].dir, '--backend', 'tpu'])).errors).toMatch(/--backend: expected auto, cpu, webgpu, cuda, dml, coreml, wasm, got tpu/);
  });

  describe('from a Hub-layout server', () => {
    let server: ModelServer;
    beforeAll(async () => {
      server = await startModelServer({ repos: [{ repo: 'acme/sd3-medium-fp16', folder: built['sd3-medium'].dir }] });
    });
    afterAll(async () => server?.close());

    it('downloads no weights: only configs, tokenizers and the small graphs, plus HEADs for sizes', async () => {
      const { code, report } = await plan(['--model', `${server.url}/acme/sd3-medium-fp16/resolve/main/`, '--no-t5']);
      expect(code).toBe(0);
      expect(report!.verdict).toBe('fits');
      const gets = server.requests.filter((r) => r.method === 'GET').map((r) => r.path);
      expect(gets.filter((p) => /onnx_data/.test(p))).toEqual([]);
      expect(server.requests.filter((r) => r.method === 'HEAD' && /onnx_data/.test(r.path)).length).toBe(4);
    });
  });
});

describe("exports without configs: the family told by the graph's own shapes", () => {
  let root: string;
  let out: string[];
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'sd3-families-'));
    vi.spyOn(console, 'log').mockImplementation((m: string) => void out.push(m));
    vi.spyOn(console, 'error').mockImplementation(() => undefined);
    // AMD's SD3-medium: a variant folder, unet/, empty configs, no model_index.json or scheduler/ (sparse weights: shapes only)
    const sd3 = join(root, 'stable-diffusion-3-medium_amdgpu', 'stable-diffusion-3-medium_io16');
    buildModel({ preset: PRESETS['sd3-medium'], id: 'x', weights: 'float16', io: 'float16', attention: 'decomposed', dataFile: () => 'model.onnx.data', sparse: true, withT5: false, withVaeEncoder: false }, new FolderOutput(sd3));
    await rename(join(sd3, 'transformer'), join(sd3, 'unet'));
    // Amuse's SD3.5-medium: components at the root
    const sd35 = join(root, 'sd35-amuse');
    buildModel({ preset: PRESETS['sd3.5-medium'], id: 'x', weights: 'float16', io: 'float16', attention: 'decomposed', dataFile: () => 'model.onnx.data', sparse: true, withT5: false, withVaeEncoder: false }, new FolderOutput(sd35));
    for (const dir of [sd3, sd35]) {
      await rm(join(dir, 'model_index.json'));
      await rm(join(dir, 'scheduler'), { recursive: true });
      for (const c of ['unet', 'transformer', 'vae_decoder', 'text_encoder', 'text_encoder_2']) await writeFile(join(dir, c, 'config.json'), '').catch(() => undefined);
      await writeFile(join(dir, 'config.json'), '');
    }
  });
  afterAll(async () => {
    vi.restoreAllMocks();
    if (root) await rm(root, { recursive: true, force: true });
  });
  const plan = async (dir: string) => {
    out = [];
    const code = await main(['--plan', '--model', dir]);
    return { code, report: JSON.parse(out.join('\n')) as PlanReport };
  };

  it("AMD's SD3-medium layout: io16 chosen for an adapter with shader-f16, SD3-medium's published configs from its shapes", async () => {
    const { code, report } = await plan(join(root, 'stable-diffusion-3-medium_amdgpu'));
    expect(code).toBe(0);
    expect(report.family).toBe('sd3-medium');
    expect(report.request).toMatchObject({ width: 1024, height: 1024, guidance: 7 });
    expect(report.layout).toMatchObject({ root: 'stable-diffusion-3-medium_io16', variant: 'io16', transformerFolder: 'unet', shapeFamily: 'sd3-medium' });
    expect(report.layout.configSources).toMatchObject({
      'model_index.json': expect.stringMatching(/^absent/),
      'scheduler/scheduler_config.json': expect.stringMatching(/^SD3 defaults/),
      'unet/config.json': 'sd3-medium defaults (the graph shows hidden 1536, depth 24, patch 2, pos_embed 192, no dual attention, no qk norm)',
      'vae_decoder/config.json': expect.stringMatching(/^SD3 VAE defaults/),
      'text_encoder/config.json': "the graph's outputs",
    });
    expect(report.weights.components.transformer.attentionSites).toBe(24);
  });

  it("Amuse's SD3.5-medium layout: MMDiT-X told from SD3-medium by its dual attention, qk norm and larger positional table", async () => {
    const { code, report } = await plan(join(root, 'sd35-amuse'));
    expect(code).toBe(0);
    expect(report.family).toBe('sd3.5-medium');
    expect(report.request).toMatchObject({ width: 1024, height: 1024, guidance: 4.5 });
    expect(report.layout.configSources['transformer/config.json']).toBe('sd3.5-medium defaults (the graph shows hidden 1536, depth 24, patch 2, pos_embed 384, dual attention in 13 blocks, qk norm)');
    expect(report.weights.components.transformer.attentionSites).toBe(24 + 13);
  });

  it('a config that disagrees with its graph is refused, naming the file and both numbers', async () => {
    const unet = join(root, 'stable-diffusion-3-medium_amdgpu', 'stable-diffusion-3-medium_io16', 'unet', 'config.json');
    await writeFile(unet, JSON.stringify({ num_layers: 38, num_attention_heads: 38, attention_head_dim: 64, pos_embed_max_size: 192 }));
    const err = await planModel(nodeFolderFiles(join(root, 'stable-diffusion-3-medium_amdgpu')), { backend: 'webgpu', fit: { features: ['shader-f16'], maxFileBytes: Infinity } }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'model_load', file: 'stable-diffusion-3-medium_io16/unet/config.json' });
    expect((err as Error).message).toMatch(/says num_layers 38, but the graph has 24 transformer blocks/);
    await writeFile(unet, '');
  });

  it('--plan on an inline graph over 64 MB streams it and finds its attention sites', async () => {
    // the tiny model with an 800² positional table: an 82 MB transformer with its weights inside the graph
    const dir = join(root, 'tiny-inline-large');
    const preset = { ...PRESETS.tiny, transformer: { ...PRESETS.tiny.transformer, posEmbedMaxSize: 800 } };
    const sizes = buildModel(tinySpec({ preset, withVaeEncoder: false }), new FolderOutput(dir));
    expect(sizes.transformer.bytes).toBeGreaterThan(64 * 1024 ** 2);
    const { code, report } = await plan(dir);
    expect(code).toBe(0);
    expect(report.weights.components.transformer).toMatchObject({ attentionSites: 2, attentionChunks: 1 });
    expect(report.weights.components.vae_decoder.attentionSites).toBe(1);
  });
});
