// Faults inside the engine: a numerical blow-up in one request's rows fails
// only that request; a lost GPU device ends every request with device_lost
// (nothing half-done is kept), and replaying them from their seeds on a fresh
// engine gives the images an undisturbed run gives.
import { describe, expect, it } from 'vitest';
import type { GenerateResult } from '../../workers/engine/api/types.ts';
import type { Engine } from '../../workers/engine/engine.ts';
import { DeviceLostError, InferenceError } from '../../workers/engine/errors.ts';
import { inlinePngEncoder } from '../../workers/engine/interleaver/interleaver.ts';
import type { Feeds } from '../../workers/engine/model/component-session.ts';
import { loadTinyEngine, maxPixelDiff, newTinyEngine } from '../helpers/tiny-engine.ts';

const requests = Array.from({ length: 6 }, (_, i) => ({ id: `r${i}`, prompt: `fault test ${i}`, seed: 500 + i, steps: 6 }));

describe('faults', () => {
  it('NaN in one request’s transformer output fails that request only; the others give their exact images', async () => {
    const reference = await loadTinyEngine();
    const expected = await Promise.all(requests.map((r) => reference.generate({ ...r, id: undefined })));
    const engine = await newTinyEngine();
    const transformer = engine.model!.transformer;
    const run = transformer.run.bind(transformer);
    let runs = 0;
    // the 3rd batched run: row 0 (the first request's unconditional half) blows up
    transformer.run = async (feeds: Feeds, names?: readonly string[]) => {
      const out = await run(feeds, names);
      if (++runs === 3) {
        const t = out.out_hidden_states;
        (t.data as Float32Array).fill(NaN, 0, t.data.length / t.dims[0]);
      }
      return out;
    };
    const results = await Promise.allSettled(requests.map((r) => engine.generate(r)));
    expect(results[0].status).toBe('rejected');
    const err = (results[0] as PromiseRejectedResult).reason;
    expect(err).toBeInstanceOf(InferenceError);
    expect(err).toMatchObject({ requestId: 'r0' });
    expect(err.message).toMatch(/^non-finite values at step \d/);
    for (let i = 1; i < requests.length; i++) {
      expect(results[i].status).toBe('fulfilled');
      expect(maxPixelDiff((results[i] as PromiseFulfilledResult<GenerateResult>).value.rgba, expected[i].rgba)).toBe(0);
    }
    const s = engine.status();
    expect([s.requestsFailed, s.requestsServed, s.requestBytes]).toEqual([1, 5, 0]);
    await engine.unload();
  });

  it('a lost device ends every request with device_lost and frees them; replayed from their seeds they give the same images', async () => {
    const reference = await loadTinyEngine();
    const expected = await Promise.all(requests.map((r) => reference.generate({ ...r, id: undefined })));
    const engine = await newTinyEngine();
    let steps = 0;
    const pending = requests.map((r) =>
      engine.generate(r, {
        onProgress: (e) => {
          if (e.status === 'step' && ++steps === 8) engine.deviceLost('simulated: device destroyed');
        },
      }),
    );
    const results = await Promise.allSettled(pending);
    expect(results.every((r) => r.status === 'rejected' && r.reason instanceof DeviceLostError)).toBe(true);
    const s = engine.status();
    expect(s.deviceLost).toBe('simulated: device destroyed');
    expect([s.requestsActive, s.requestsQueued, s.requestBytes]).toEqual([0, 0, 0]);
    await expect(engine.generate({ prompt: 'after the loss' })).rejects.toMatchObject({ code: 'device_lost' });

    // what the worker restart does: a fresh engine replays the stored requests
    const fresh = await newTinyEngine();
    const replayed = await Promise.all(requests.map((r) => fresh.generate(r)));
    for (let i = 0; i < requests.length; i++) expect(maxPixelDiff(replayed[i].rgba, expected[i].rgba)).toBe(0);
    await Promise.all([engine.unload(), fresh.unload()]);
  });

  /** Six requests, one of which meets the fault; the rest must give the images an undisturbed engine gives. */
  const oneFails = async (engine: Awaited<ReturnType<typeof newTinyEngine>>, run: (r: (typeof requests)[number]) => Promise<GenerateResult>, expectMessage: RegExp) => {
    const reference = await loadTinyEngine();
    const expected = await Promise.all(requests.map((r) => reference.generate({ ...r, id: undefined })));
    const results = await Promise.allSettled(requests.map(run));
    expect(results[2].status).toBe('rejected');
    const err = (results[2] as PromiseRejectedResult).reason;
    expect(err).toBeInstanceOf(InferenceError);
    expect(err.message).toMatch(expectMessage);
    // the request is named in a field, not in the message a person reads
    expect(err.requestId).toBe('r2');
    expect(err.message).not.toMatch(/r2/);
    for (const i of [0, 1, 3, 4, 5]) {
      expect(results[i].status, requests[i].id).toBe('fulfilled');
      expect(maxPixelDiff((results[i] as PromiseFulfilledResult<GenerateResult>).value.rgba, expected[i].rgba)).toBe(0);
    }
    const s = engine.status();
    expect([s.requestsFailed, s.requestsServed, s.requestsActive, s.requestsQueued, s.requestBytes]).toEqual([1, 5, 0, 0, 0]);
    // and the engine goes on serving
    expect((await engine.generate({ prompt: 'after the fault', seed: 1, steps: 1 })).rgba.length).toBe(64 * 64 * 4);
    await engine.unload();
  };

  it('a progress callback that throws ends its own request, naming it; the others finish', async () => {
    const engine = await newTinyEngine();
    await oneFails(
      engine,
      (r) =>
        engine.generate(r, {
          onProgress: (e) => {
            if (r.id === 'r2' && e.status === 'step' && e.loaded === 3) throw new Error('the page went away');
          },
        }),
      /its progress callback threw \(the page went away\); the request was stopped, others carry on/,
    );
  });

  it('a PNG encode that fails ends its own request, naming it; the others finish', async () => {
    let encodes = 0;
    const engine = await newTinyEngine({
      encodePng: async (rgba, width, height) => {
        encodes++;
        if (width === 96) throw new Error('encoder out of memory'); // r2 alone is 96 px wide
        return inlinePngEncoder(rgba, width, height);
      },
    });
    await oneFails(engine, (r) => engine.generate(r.id === 'r2' ? { ...r, width: 96 } : r), /encoding its PNG failed \(encoder out of memory\)/);
    expect(encodes).toBe(7); // six requests and the one after the fault
  });

  it('a step preview that fails ends its own request, naming it; the others finish', async () => {
    const engine = await newTinyEngine({
      renderPreview: (latents, c, h, w, id) => {
        if (id === 'r2') throw new Error('preview shader missing');
        return new Uint8ClampedArray(h * w * 4);
      },
    });
    await oneFails(engine, (r) => engine.generate(r, { preview: true }), /its step preview failed \(preview shader missing\)/);
  });
});

/** Holds the engine's current transformer after its `after`-th run until `until` settles: requests are surely still running when a switch lands. */
function holdTransformer(engine: Engine, after: number, until: Promise<unknown>): void {
  const t = engine.model!.transformer;
  const run = t.run.bind(t);
  let runs = 0;
  t.run = async (feeds: Feeds, names?: readonly string[]) => {
    if (++runs > after) await until.catch(() => undefined);
    return run(feeds, names);
  };
}

describe('model switch', () => {
  it('a switch loses nothing: running requests finish on the old model, queued ones and those sent during the load run on the new one', async () => {
    const { TINY_MODEL_EXTERNAL_DIR } = await import('../helpers/tiny-engine.ts');
    // two run at a time: the other two wait in the old model's queue when the switch comes
    const engine = await newTinyEngine({ maxActive: 2 });
    const from = engine.model!.info.id;
    let steps = 0;
    let started!: () => void;
    const running = new Promise<void>((r) => (started = r));
    let switched!: (v: unknown) => void;
    holdTransformer(engine, 4, new Promise((r) => (switched = r)));
    const old = Array.from({ length: 4 }, (_, i) =>
      engine.generate({ id: `old${i}`, prompt: `running ${i}`, seed: i, steps: 12 }, { onProgress: (e) => e.status === 'step' && ++steps === 4 && started() }),
    );
    await running;
    const load = engine.load({ kind: 'path', path: TINY_MODEL_EXTERNAL_DIR });
    void load.then(switched);
    // sent while the load runs: they wait for it
    const during = [0, 1].map((i) => engine.generate({ id: `new${i}`, prompt: `during the load ${i}`, seed: 10 + i, steps: 3 }));
    const info = await load;
    expect(info.id).not.toBe(from);
    const oldResults = await Promise.all(old);
    // the two that ran finished where they started; the two still queued moved to the new model
    expect(oldResults.map((r) => r.metadata.modelId)).toEqual([from, from, info.id, info.id]);
    const fresh = await Promise.all(during);
    expect(fresh.map((r) => r.metadata.modelId)).toEqual([info.id, info.id]);
    // the same weights in another layout: every image is the one an undisturbed run gives
    const reference = await loadTinyEngine();
    for (const [i, r] of oldResults.entries()) expect(maxPixelDiff(r.rgba, (await reference.generate({ prompt: `running ${i}`, seed: i, steps: 12 })).rgba)).toBe(0);
    for (const [i, r] of fresh.entries()) expect(maxPixelDiff(r.rgba, (await reference.generate({ prompt: `during the load ${i}`, seed: 10 + i, steps: 3 })).rgba)).toBe(0);
    await engine.idle();
    expect(engine.status()).toMatchObject({ requestsActive: 0, requestsQueued: 0, requestBytes: 0, requestsFailed: 0, requestsCancelled: 0, requestsServed: 6 });
    await engine.unload();
  });

  it("with onSwitch 'rerun', running requests start again from their seed on the new model and give the same images", async () => {
    const { TINY_MODEL_EXTERNAL_DIR } = await import('../helpers/tiny-engine.ts');
    const engine = await newTinyEngine();
    let steps = 0;
    let started!: () => void;
    const running = new Promise<void>((r) => (started = r));
    let switched!: (v: unknown) => void;
    holdTransformer(engine, 2, new Promise((r) => (switched = r)));
    const old = [0, 1].map((i) => engine.generate({ prompt: `rerun ${i}`, seed: 70 + i, steps: 12 }, { onProgress: (e) => e.status === 'step' && ++steps === 4 && started() }));
    await running;
    const load = engine.load({ kind: 'path', path: TINY_MODEL_EXTERNAL_DIR }, undefined, { onSwitch: 'rerun' });
    void load.then(switched);
    const info = await load;
    const results = await Promise.all(old);
    expect(results.map((r) => r.metadata.modelId)).toEqual([info.id, info.id]);
    const reference = await loadTinyEngine();
    for (const [i, r] of results.entries()) expect(maxPixelDiff(r.rgba, (await reference.generate({ prompt: `rerun ${i}`, seed: 70 + i, steps: 12 })).rgba)).toBe(0);
    expect(engine.status()).toMatchObject({ requestsFailed: 0, requestsCancelled: 0, requestBytes: 0 });
    await engine.unload();
  });

  it('loading the model already loaded is a no-op: running requests carry on, nothing is reloaded', async () => {
    const engine = await newTinyEngine();
    const model = engine.model;
    const running = engine.generate({ prompt: 'keeps running', seed: 5, steps: 20 });
    const info = await engine.load({ kind: 'path', path: (await import('../helpers/tiny-engine.ts')).TINY_MODEL_DIR });
    expect(info.id).toBe(model!.info.id);
    expect(engine.model).toBe(model); // the same sessions
    expect((await running).metadata.modelId).toBe(info.id);
    // other options make it another load
    await engine.load({ kind: 'path', path: (await import('../helpers/tiny-engine.ts')).TINY_MODEL_DIR }, undefined, { skipT5: true });
    expect(engine.model).not.toBe(model);
    await engine.unload();
  });

  it('an aborted load stops, and the loaded model keeps serving the requests that waited for it', async () => {
    const { TINY_MODEL_EXTERNAL_DIR } = await import('../helpers/tiny-engine.ts');
    const engine = await newTinyEngine();
    const from = engine.model!.info.id;
    const controller = new AbortController();
    const load = engine.load({ kind: 'path', path: TINY_MODEL_EXTERNAL_DIR }, (e) => e.status === 'done' && controller.abort(), {}, controller.signal);
    const waiting = engine.generate({ prompt: 'waited for an aborted load', seed: 4, steps: 2 });
    await expect(load).rejects.toMatchObject({ code: 'load_aborted' });
    expect(engine.model!.info.id).toBe(from);
    expect((await waiting).metadata.modelId).toBe(from);
    // a newer load replaces one under way
    const first = engine.load({ kind: 'path', path: TINY_MODEL_EXTERNAL_DIR });
    const second = engine.load({ kind: 'path', path: TINY_MODEL_EXTERNAL_DIR });
    await expect(first).rejects.toMatchObject({ code: 'load_aborted', message: expect.stringMatching(/replaced by a load of/) });
    expect((await second).id).not.toBe(from);
    await engine.unload();
  });
});
