// Exports made by the real tools (tools/fixtures/make_real_exports.py: torch.onnx
// in Optimum's layout, onnxruntime's transformer optimizer, its fp16 converter,
// the Amuse / AMD / TensorStack layouts and names) generate in Node through the
// engine and match diffusers' own pipeline run on the same weights and noise.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { main } from '../../cli/generate.ts';
import type { PlanReport } from '../../workers/engine/memory/plan-report.ts';
import type { GenerateResult, ModelSourceSpec } from '../../workers/engine/api/types.ts';
import { ModelLoadError } from '../../workers/engine/errors.ts';
import { createNodeEngine } from '../../workers/engine/node.ts';
import { diffToRgb, REAL_EXPORTS_DIR as ROOT, REAL_REPOS, reference, referenceRgb, serveRealRepos, type Reference } from '../helpers/real-exports.ts';
import type { ModelServer } from '../helpers/model-server.ts';

/** Generates every reference run on a fixture folder. */
async function generateAll(source: string | ModelSourceSpec, ref: Reference, hubToken?: string): Promise<GenerateResult[]> {
  const engine = createNodeEngine();
  await engine.load(typeof source === 'string' ? { kind: 'path', path: source } : source, undefined, { hubToken });
  try {
    const out: GenerateResult[] = [];
    for (const run of ref.runs) out.push(await engine.generate({ prompt: ref.prompt, negativePrompt: ref.negativePrompt, seed: ref.seed, steps: ref.steps, guidance: run.guidance, width: ref.width, height: ref.height }));
    return out;
  } finally {
    await engine.unload();
  }
}

const results = new Map<string, GenerateResult[]>();
const generated = async (fixture: string, ref: string) => {
  if (!results.has(fixture)) results.set(fixture, await generateAll(join(ROOT, fixture), reference(ref)));
  return results.get(fixture)!;
};

describe.each([
  ['sd3', 'sd3'],
  ['sd3-fused', 'sd3'],
  ['sd35', 'sd35'],
  ['sd35-fused', 'sd35'],
])('fp32 export %s', (fixture, ref) => {
  it('generates within 2 levels of diffusers at every guidance', async () => {
    const images = await generated(fixture, ref);
    const r = reference(ref);
    r.runs.forEach((run, i) => {
      expect(diffToRgb(images[i].rgba, referenceRgb(ref, run)), `guidance ${run.guidance}`).toBeLessThanOrEqual(2);
    });
    // guidance changes the picture: the comparison is not of two flat images
    expect(diffToRgb(images[0].rgba, referenceRgb(ref, r.runs[1]))).toBeGreaterThan(10);
  });
});

describe('optimizer-fused exports (NhwcConv, GroupNorm, SkipGroupNorm, SkipLayerNorm, BiasGelu, FastGelu, MultiHeadAttention, T5 layer norms)', () => {
  it.each([['sd3'], ['sd35']])('%s fused matches the unfused export within 1 level', async (name) => {
    const plain = await generated(name, name);
    const fused = await generated(`${name}-fused`, name);
    for (let i = 0; i < plain.length; i++) {
      let d = 0;
      for (let p = 0; p < plain[i].rgba.length; p++) d = Math.max(d, Math.abs(plain[i].rgba[p] - fused[i].rgba[p]));
      expect(d).toBeLessThanOrEqual(1);
    }
  });

  it('--plan says, per component, which operators the backend lacks and the load will lower (before any weight downloads)', async () => {
    const plan = async (backend: string) => {
      const out: string[] = [];
      const log = vi.spyOn(console, 'log').mockImplementation((m: string) => void out.push(m));
      try {
        expect(await main(['--plan', '--model', join(ROOT, 'sd3-fused'), '--backend', backend, '--size', '64'])).toBe(0);
      } finally {
        log.mockRestore();
      }
      const report = JSON.parse(out.join('\n')) as PlanReport;
      return Object.fromEntries(Object.entries(report.weights.components).map(([name, c]) => [name, c.lowered]));
    };
    const ops = JSON.parse(readFileSync(join(ROOT, 'ops.json'), 'utf8'))['sd3-fused'];
    // neither backend has NhwcConv or the optimizer's GroupNorm / SkipGroupNorm; everything else runs as fused (unpacked attention, FastGelu…)
    const vae = (c: string) => ({ NhwcConv: ops[c].NhwcConv, GroupNorm: ops[c].GroupNorm, SkipGroupNorm: ops[c].SkipGroupNorm });
    const none = { text_encoder: {}, text_encoder_2: {}, text_encoder_3: {}, transformer: {} };
    expect(await plan('wasm')).toEqual({ ...none, vae_decoder: vae('vae_decoder'), vae_encoder: vae('vae_encoder') });
    expect(await plan('webgpu')).toEqual({ ...none, vae_decoder: vae('vae_decoder'), vae_encoder: vae('vae_encoder') });
    // the unfused export has nothing to lower
    const engine = createNodeEngine();
    const info = await engine.load({ kind: 'path', path: join(ROOT, 'sd3') });
    await engine.unload();
    expect(info.layout!.lowered).toEqual({});
  });

  it('the fused graphs carry the com.microsoft operators the optimizer emits', () => {
    const ops = JSON.parse(readFileSync(join(ROOT, 'ops.json'), 'utf8'));
    expect(Object.keys(ops['sd3-fused'].vae_decoder).sort()).toEqual(['GroupNorm', 'NhwcConv', 'SkipGroupNorm']);
    expect(Object.keys(ops['sd3-fused'].transformer).sort()).toEqual(['FastGelu', 'MultiHeadAttention']);
    expect(Object.keys(ops['sd3-fused'].text_encoder_2).sort()).toEqual(['BiasGelu', 'SkipLayerNormalization']);
    expect(Object.keys(ops['sd3-fused'].text_encoder_3).sort()).toEqual(['FastGelu', 'SkipSimplifiedLayerNormalization']);
  });
});

describe('fp16 converter outputs', () => {
  // fp16 inside: not bit-comparable with diffusers' fp32 run, but the same picture
  it.each([['sd35-fp16-io32'], ['sd35-fp16-io16']])('%s loads on wasm and generates close to diffusers', async (fixture) => {
    const images = await generated(fixture, 'sd35');
    const r = reference('sd35');
    r.runs.forEach((run, i) => expect(diffToRgb(images[i].rgba, referenceRgb('sd35', run))).toBeLessThanOrEqual(12));
  });
});

// The path loads of these layouts are in layouts.test.ts (against the Optimum folder each comes from); here
// they come as people meet them: from a gated Hub repo, with a token, compared with diffusers.
describe('every fixture layout as a gated Hub repo (Optimum, optimizer-fused, Amuse, AMD variants, TensorStack names)', () => {
  const TOKEN = 'hf_NodeGatedFixtureToken0123456789';
  let served: Awaited<ReturnType<typeof serveRealRepos>>;
  let server: ModelServer;
  beforeAll(async () => {
    served = await serveRealRepos(TOKEN);
    server = served.server;
  });
  afterAll(async () => served?.close());
  const hub = (repo: string): ModelSourceSpec => ({ kind: 'hub', repo, host: server.url });

  it.each(REAL_REPOS.map((r) => [r.repo, r] as const))('%s loads with the token and generates diffusers\' pixels', async (repo, r) => {
    const ref = reference(r.reference);
    const images = await generateAll(hub(repo), ref, TOKEN);
    ref.runs.forEach((run, i) => expect(diffToRgb(images[i].rgba, referenceRgb(r.reference, run)), `guidance ${run.guidance}`).toBeLessThanOrEqual(r.tolerance));
    // every file came with the token, and the token is in no file name or URL
    const sent = server.requests.filter((q) => q.path.includes(`/${repo}/resolve/`));
    expect(sent.length).toBeGreaterThan(5);
    expect(sent.filter((q) => !q.authorization)).toEqual([]);
    expect(server.requests.filter((q) => q.path.includes(TOKEN))).toEqual([]);
  });

  it('without the token, the error names the repo and says a token is needed; nothing was generated from it', async () => {
    const engine = createNodeEngine();
    const err = await engine.load(hub(REAL_REPOS[0].repo)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelLoadError);
    expect(err).toMatchObject({ failure: 'gated' });
    expect((err as Error).message).toContain(`${REAL_REPOS[0].repo} is gated: it needs a Hugging Face token. Accept its license at ${server.url}/${REAL_REPOS[0].repo}`);
    expect(engine.status().model).toBeNull();
  });

  it('a token whose account has not accepted the license: told so, naming the repo', async () => {
    const engine = createNodeEngine();
    const err = await engine.load(hub(REAL_REPOS[3].repo), undefined, { hubToken: 'hf_SomeoneElsesToken000000000000000' }).catch((e: unknown) => e);
    expect((err as Error).message).toContain(`${REAL_REPOS[3].repo} is gated and your token's account has not accepted its license`);
  });
});
