// How attention runs on each adapter: the choice between the fused, fused-and-chunked and
// decomposed-and-chunked forms (device-fit.ts chooseAttentionForm), the plan's JSON field
// (`--plan`), and the engine's loaded model saying which form it runs and why.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { main } from '../../cli/generate.ts';
import type { PlanReport } from '../../workers/engine/memory/plan-report.ts';
import { ATTENTION_FORMS, chooseAttentionForm, NO_SUBGROUPS_FORM } from '../../workers/engine/model/device-fit.ts';
import { createNodeEngine } from '../../workers/engine/node.ts';
import { loadTinyEngine, maxPixelDiff, TINY_MODEL_DIR } from '../helpers/tiny-engine.ts';

const GiB = 1024 ** 3;

describe('attention form choice', () => {
  const gpu = { backend: 'webgpu' as const, maxBufferBytes: GiB, headDim: 64 };
  it('subgroups: fused with no chunks where one row fits a buffer, fused in chunks where it does not', () => {
    expect(chooseAttentionForm({ ...gpu, features: ['shader-f16', 'subgroups'], chunks: 1 })).toMatchObject({ form: 'fused', chunks: 1, reason: expect.stringMatching(/subgroups.*FlashAttention.*no chunks/) });
    expect(chooseAttentionForm({ ...gpu, features: ['subgroups'], chunks: 16 })).toMatchObject({ form: 'fused-chunked', chunks: 16, reason: expect.stringMatching(/unfused kernel.*16 query chunks.*1\.07 GB|16 query chunks/) });
  });
  it('no subgroups, or a head size FlashAttention cannot take: the measured form, chunked as the scores need', () => {
    for (const chunks of [1, 8]) {
      const c = chooseAttentionForm({ ...gpu, features: ['shader-f16'], chunks });
      expect(c).toMatchObject({ form: NO_SUBGROUPS_FORM, chunks: NO_SUBGROUPS_FORM === 'fused' ? 1 : chunks, reason: expect.stringMatching(/no subgroups.*measurement/) });
    }
    expect(chooseAttentionForm({ ...gpu, headDim: 66, features: ['subgroups'], chunks: 2 })).toMatchObject({ form: NO_SUBGROUPS_FORM, reason: expect.stringMatching(/head size 66 is not a multiple of 4/) });
    // the adapter offers subgroups, the device the sessions run on lacks them: no flash path
    expect(chooseAttentionForm({ ...gpu, features: ['subgroups'], deviceFeatures: ['shader-f16'], chunks: 1 })).toMatchObject({ form: NO_SUBGROUPS_FORM, reason: expect.stringMatching(/offers subgroups but the device .* made without them/) });
    expect(chooseAttentionForm({ ...gpu, features: ['subgroups'], deviceFeatures: ['subgroups'], chunks: 1 }).form).toBe('fused');
    // SwiftShader: subgroups 4 wide, below FlashAttention's 16
    expect(chooseAttentionForm({ ...gpu, features: ['subgroups'], deviceFeatures: ['subgroups'], subgroupMinSize: 4, chunks: 1 })).toMatchObject({ form: NO_SUBGROUPS_FORM, reason: expect.stringMatching(/subgroups are 4 wide, below the 16/) });
    expect(chooseAttentionForm({ ...gpu, features: ['subgroups'], deviceFeatures: ['subgroups'], subgroupMinSize: 32, chunks: 1 }).form).toBe('fused');
  });
  it('wasm keeps the export\'s own attention; a forced form wins everywhere', () => {
    expect(chooseAttentionForm({ backend: 'wasm', maxBufferBytes: 2 * GiB, chunks: 4 })).toMatchObject({ form: 'decomposed-chunked', chunks: 4, reason: expect.stringMatching(/^wasm/) });
    for (const force of ATTENTION_FORMS) {
      const c = chooseAttentionForm({ ...gpu, features: ['subgroups'], chunks: 4, force });
      expect(c).toMatchObject({ form: force, chunks: force === 'fused' ? 1 : 4, reason: expect.stringMatching(/^forced by the load option/) });
    }
    expect(chooseAttentionForm({ ...gpu, chunks: 4, force: 'auto' }).reason).not.toMatch(/forced/);
  });
});

describe('the plan and the loaded model name the form', () => {
  let out: string[];
  beforeAll(() => {
    vi.spyOn(console, 'log').mockImplementation((m: string) => void out.push(m));
    vi.spyOn(console, 'error').mockImplementation(() => undefined);
  });
  afterAll(() => vi.restoreAllMocks());
  const plan = async (args: string[]) => {
    out = [];
    expect(await main(['--plan', '--model', TINY_MODEL_DIR, ...args])).toBe(0);
    return JSON.parse(out.join('\n')) as PlanReport;
  };

  it('--plan: attention { form, chunks, reason } and per-component attentionFused', async () => {
    const noSub = await plan([]);
    expect(noSub.attention).toMatchObject({ form: NO_SUBGROUPS_FORM, chunks: 1, reason: expect.stringMatching(/no subgroups/) });
    const sub = await plan(['--subgroups']);
    expect(sub.device.features).toContain('subgroups');
    expect(sub.attention).toMatchObject({ form: 'fused', chunks: 1 });
    expect(sub.weights.components.transformer).toMatchObject({ attentionSites: 2, attentionChunks: 1, attentionFused: true });
    expect(sub.weights.components.vae_decoder).toMatchObject({ attentionFused: true });
    const forced = await plan(['--subgroups', '--attention', 'decomposed-chunked']);
    expect(forced.attention).toMatchObject({ form: 'decomposed-chunked', reason: expect.stringMatching(/forced/) });
    expect(forced.weights.components.transformer.attentionFused).toBe(false);
    const wasm = await plan(['--backend', 'wasm']);
    expect(wasm.attention.form).toBe('decomposed-chunked');
    out = [];
    expect(await main(['--plan', '--model', TINY_MODEL_DIR, '--attention', 'flash'])).toBe(2);
  });

  it('a forced form loads, status names it, and the images match the export\'s own attention', async () => {
    const reference = await loadTinyEngine();
    expect(reference.model!.info.attention).toMatchObject({ form: 'decomposed-chunked', chunks: 1 });
    for (const form of ['fused', 'fused-chunked'] as const) {
      // small buffers cut the chunked form's scores; the fused form never chunks (its estimate holds the whole scores)
      const engine = createNodeEngine({ deviceFit: { ...(form === 'fused' ? {} : { maxBufferBytes: 300 * 1024 }), attention: form } });
      await engine.load({ kind: 'path', path: TINY_MODEL_DIR });
      expect(engine.status().model!.attention).toMatchObject({ form, chunks: form === 'fused' ? 1 : 4, reason: expect.stringMatching(/forced/) });
      expect(engine.model!.dims.transformerChunks).toBe(form === 'fused' ? 1 : 4);
      const r = { prompt: `attention ${form}`, seed: 41, steps: 2 };
      expect(maxPixelDiff((await engine.generate(r)).rgba, (await reference.generate(r)).rgba), form).toBeLessThanOrEqual(2);
      await engine.unload();
    }
    // forced whole on buffers too small for its scores: the budget says so per request instead of crashing the device
    const tight = createNodeEngine({ deviceFit: { maxBufferBytes: 300 * 1024, attention: 'fused' } });
    await tight.load({ kind: 'path', path: TINY_MODEL_DIR });
    expect(tight.status().model!.attention!.reason).toMatch(/exceed the 300\.0 KB buffer limit unless the flash path runs/);
    await expect(tight.generate({ prompt: 'too big', seed: 1, steps: 1 })).rejects.toThrow(/over this adapter's largest buffer/);
    await tight.unload();
  });
});
