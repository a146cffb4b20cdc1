// The self-built tiny SD3: deterministic bytes, the real export contract, and
// every component running once on onnxruntime-web's wasm backend.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-web';
import { beforeAll, describe, expect, it } from 'vitest';
import { tinyModelFiles } from '../../tools/model-builder/build.ts';
import { TINY_MODEL_DIR, TINY_MODEL_EXTERNAL_DIR } from '../helpers/tiny-engine.ts';

ort.env.wasm.numThreads = 1;

const sha = async (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

describe('tiny model builder', () => {
  it('builds identical bytes every time', async () => {
    for (const variant of ['inline', 'external'] as const) {
      const a = tinyModelFiles(variant);
      const b = tinyModelFiles(variant);
      expect([...a.keys()]).toEqual([...b.keys()]);
      for (const [path, bytes] of a) expect(await sha(bytes), path).toBe(await sha(b.get(path)!));
    }
  });

  it('wrote the served folders from the same build', async () => {
    for (const [variant, dir] of [['inline', TINY_MODEL_DIR], ['external', TINY_MODEL_EXTERNAL_DIR]] as const) {
      for (const [path, bytes] of tinyModelFiles(variant)) expect(await sha(readFileSync(join(dir, path))), `${variant}/${path}`).toBe(await sha(bytes));
    }
  });

  it('has the Optimum layout, a few MB at most', () => {
    const files = tinyModelFiles('inline');
    for (const p of [
      'model_index.json',
      'scheduler/scheduler_config.json',
      ...['tokenizer', 'tokenizer_2', 'tokenizer_3'].flatMap((t) => [`${t}/tokenizer.json`, `${t}/tokenizer_config.json`]),
      ...['text_encoder', 'text_encoder_2', 'text_encoder_3', 'transformer', 'vae_decoder', 'vae_encoder'].flatMap((c) => [`${c}/model.onnx`, `${c}/config.json`]),
    ]) {
      expect(files.has(p), p).toBe(true);
    }
    const total = [...files.values()].reduce((n, b) => n + b.byteLength, 0);
    expect(total).toBeLessThan(4 * 1024 * 1024);
    expect(JSON.parse(new TextDecoder().decode(files.get('scheduler/scheduler_config.json')!)).shift).toBe(3.0);
    const ext = tinyModelFiles('external');
    expect(ext.has('transformer/model.onnx_data')).toBe(true);
    expect(ext.get('transformer/model.onnx')!.byteLength).toBeLessThan(files.get('transformer/model.onnx')!.byteLength / 4);
  });
});

describe('every component on the wasm backend', () => {
  const sessions = new Map<string, ort.InferenceSession>();
  beforeAll(async () => {
    for (const c of ['text_encoder', 'text_encoder_2', 'text_encoder_3', 'transformer', 'vae_decoder', 'vae_encoder']) {
      sessions.set(c, await ort.InferenceSession.create(readFileSync(join(TINY_MODEL_DIR, c, 'model.onnx')), { executionProviders: ['wasm'] }));
    }
  });

  const finite = (t: ort.Tensor) => Array.from(t.data as Float32Array).every(Number.isFinite);
  const meta = (s: ort.InferenceSession, name: string) => s.inputMetadata.find((m) => m.name === name) as unknown as { type: string; shape: readonly (number | string)[] };

  it('CLIP encoders: ids in, pooled + every hidden state out, int64 and int32 ids', async () => {
    for (const [c, type, layers] of [['text_encoder', 'int64', 2], ['text_encoder_2', 'int32', 3]] as const) {
      const s = sessions.get(c)!;
      expect(meta(s, 'input_ids').type).toBe(type);
      expect(meta(s, 'input_ids').shape[0]).toBeTypeOf('string'); // symbolic batch
      expect(s.outputNames).toEqual(expect.arrayContaining(['text_embeds', 'last_hidden_state', ...Array.from({ length: layers + 1 }, (_, i) => `hidden_states.${i}`)]));
      const ids = type === 'int64' ? new ort.Tensor('int64', new BigInt64Array(3 * 77).fill(5n), [3, 77]) : new ort.Tensor('int32', new Int32Array(3 * 77).fill(5), [3, 77]);
      const out = await s.run({ input_ids: ids });
      expect(out.text_embeds.dims).toEqual([3, 32]);
      expect(out[`hidden_states.${layers - 1}`].dims).toEqual([3, 77, 32]);
      expect(Object.values(out).every(finite)).toBe(true);
    }
  });

  it('T5 encoder: last_hidden_state at the joint width', async () => {
    const out = await sessions.get('text_encoder_3')!.run({ input_ids: new ort.Tensor('int64', new BigInt64Array(2 * 256).fill(3n), [2, 256]) });
    expect(out.last_hidden_state.dims).toEqual([2, 256, 96]);
    expect(finite(out.last_hidden_state)).toBe(true);
  });

  it('transformer: per-row timesteps, symbolic batch/height/width', async () => {
    const s = sessions.get('transformer')!;
    expect([...s.inputNames].sort()).toEqual(['encoder_hidden_states', 'hidden_states', 'pooled_projections', 'timestep']);
    expect(s.outputNames).toEqual(['out_hidden_states']);
    const shape = meta(s, 'hidden_states').shape;
    expect(shape[1]).toBe(16);
    expect([shape[0], shape[2], shape[3]].every((d) => typeof d === 'string')).toBe(true);
    expect(meta(s, 'timestep').shape.length).toBe(1);
    for (const [b, side] of [[3, 8], [1, 16]]) {
      const out = await s.run({
        hidden_states: new ort.Tensor('float32', new Float32Array(b * 16 * side * side).fill(0.3), [b, 16, side, side]),
        encoder_hidden_states: new ort.Tensor('float32', new Float32Array(b * 333 * 96).fill(0.1), [b, 333, 96]),
        pooled_projections: new ort.Tensor('float32', new Float32Array(b * 64).fill(0.2), [b, 64]),
        timestep: new ort.Tensor('float32', Float32Array.from({ length: b }, (_, i) => 1000 - 300 * i), [b]),
      });
      expect(out.out_hidden_states.dims).toEqual([b, 16, side, side]);
      expect(finite(out.out_hidden_states)).toBe(true);
      if (b === 3) {
        // rows at different timesteps get different outputs from identical inputs
        const d = out.out_hidden_states.data as Float32Array;
        const per = 16 * side * side;
        expect(d.subarray(0, per)).not.toEqual(d.subarray(per, 2 * per));
      }
    }
  });

  it('VAE decoder and encoder: factor 8, 16 latent channels', async () => {
    const dec = await sessions.get('vae_decoder')!.run({ latent_sample: new ort.Tensor('float32', new Float32Array(2 * 16 * 8 * 8).fill(0.1), [2, 16, 8, 8]) });
    expect(dec.sample.dims).toEqual([2, 3, 64, 64]);
    expect(finite(dec.sample)).toBe(true);
    const enc = await sessions.get('vae_encoder')!.run({ sample: new ort.Tensor('float32', new Float32Array(3 * 64 * 64).fill(0.1), [1, 3, 64, 64]) });
    expect(enc.latent_parameters.dims).toEqual([1, 32, 8, 8]);
  });

  it('the external-data variant gives the same transformer output', async () => {
    const dir = join(TINY_MODEL_EXTERNAL_DIR, 'transformer');
    const ext = await ort.InferenceSession.create(readFileSync(join(dir, 'model.onnx')), {
      executionProviders: ['wasm'],
      externalData: [{ path: 'model.onnx_data', data: readFileSync(join(dir, 'model.onnx_data')) }],
    });
    const feeds = {
      hidden_states: new ort.Tensor('float32', new Float32Array(16 * 64).fill(0.5), [1, 16, 8, 8]),
      encoder_hidden_states: new ort.Tensor('float32', new Float32Array(333 * 96).fill(0.1), [1, 333, 96]),
      pooled_projections: new ort.Tensor('float32', new Float32Array(64).fill(0.2), [1, 64]),
      timestep: new ort.Tensor('float32', Float32Array.from([500]), [1]),
    };
    const a = await sessions.get('transformer')!.run(feeds);
    const b = await ext.run(feeds);
    expect(b.out_hidden_states.data).toEqual(a.out_hidden_states.data);
  });
});
