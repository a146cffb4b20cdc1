// Faults inside the engine: a numerical blow-up in one request's rows fails
// only that request; a lost GPU device ends every request with device_lost
// (nothing half-done is kept), and replaying them from their seeds on a fresh
// engine gives the images an undisturbed run gives.
import { describe, expect, it } from 'vitest';
import type { GenerateResult } from '../../workers/engine/api/types.ts';
import { DeviceLostError, InferenceError } from '../../workers/engine/errors.ts';
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
    expect(err.message).toMatch(/r0.*non-finite|non-finite.*r0/);
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
});
