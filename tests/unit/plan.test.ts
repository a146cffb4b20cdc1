// `npm run generate -- --plan`: the memory plan of real-size models, built by
// the project at full depth with sparse external data (right sizes, no
// weights), so it costs nothing to make. Planning reads configs, graphs and
// sizes only: no weight is downloaded.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { main } from '../../cli/generate.ts';
import { PRESETS } from '../../tools/model-builder/presets.ts';
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
    expect((await plan(['--model', built['sd3-medium'].dir, '--backend', 'cuda'])).errors).toMatch(/--backend: expected webgpu or wasm/);
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
