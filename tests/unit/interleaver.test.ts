// The step interleaver: batching across timesteps, fairness, cancellation,
// and admission by memory.
import { describe, expect, it } from 'vitest';
import type { GenerateResult } from '../../workers/engine/api/types.ts';
import { CancelledError, TooLargeError } from '../../workers/engine/errors.ts';
import { RESERVE_BYTES } from '../../workers/engine/memory/budget.ts';
import { requestFootprint } from '../../workers/engine/memory/footprint.ts';
import { ort } from '../../workers/engine/node.ts';
import { RequestRng } from '../../workers/engine/rng.ts';
import { decodeLatents, decodeTiled } from '../../workers/engine/sd3/decode.ts';
import { loadTinyEngine, maxPixelDiff, newTinyEngine } from '../helpers/tiny-engine.ts';

const requests = Array.from({ length: 8 }, (_, i) => ({ id: `b${i}`, prompt: `batched prompt ${i}`, seed: 500 + i, steps: 2 + (i % 4), guidance: i % 3 ? 5 : 1 }));

describe('batching', () => {
  it('requests batched together give the same image as each alone, in fewer transformer runs', async () => {
    const solo = await loadTinyEngine();
    const alone: GenerateResult[] = [];
    for (const r of requests) alone.push(await solo.generate(r));

    const batched = await newTinyEngine({ maxBatch: 8 });
    const t = batched.model!.transformer;
    const together = await Promise.all(requests.map((r) => batched.generate(r)));
    together.forEach((img, i) => expect(maxPixelDiff(img.rgba, alone[i].rgba), requests[i].id).toBeLessThanOrEqual(1));
    // 8 requests at different timesteps share runs: as many runs as the longest request has steps
    expect(t.runs).toBe(Math.max(...requests.map((r) => r.steps)));
    expect(t.rows).toBe(requests.reduce((n, r) => n + r.steps * (r.guidance > 1 ? 2 : 1), 0));
    // VAE decodes are batched too
    expect(batched.model!.vaeDecoder.runs).toBeLessThan(requests.length);
    await batched.unload();
  });

  it('maxBatch 1 runs one request per transformer run', async () => {
    const engine = await newTinyEngine({ maxBatch: 1 });
    await Promise.all(requests.slice(0, 3).map((r) => engine.generate(r)));
    expect(engine.model!.transformer.runs).toBe(requests.slice(0, 3).reduce((n, r) => n + r.steps, 0));
    await engine.unload();
  });

  it('requests of different sizes run in separate batches', async () => {
    const engine = await newTinyEngine();
    const t = engine.model!.transformer;
    await Promise.all([engine.generate({ prompt: 'a', seed: 1, steps: 2, width: 64, height: 64 }), engine.generate({ prompt: 'b', seed: 2, steps: 2, width: 128, height: 64 })]);
    expect(t.runs).toBe(4);
    await engine.unload();
  });
});

describe('fairness', () => {
  it('a 4-step request behind 8 long ones finishes within its steps plus a small constant of cycles', async () => {
    const engine = await newTinyEngine();
    // let the long ones get going first: the third step of the first one
    let going!: () => void;
    const started = new Promise<void>((r) => (going = r));
    const long = Array.from({ length: 8 }, (_, i) => engine.generate({ prompt: `long ${i}`, seed: i, steps: 30 }, { onProgress: (e) => i === 0 && e.status === 'step' && e.loaded === 3 && going() }));
    await started;
    const startCycle = engine.status().cycles;
    const short = await engine.generate({ prompt: 'short', seed: 99, steps: 4 });
    const cyclesTaken = engine.status().cycles - startCycle;
    expect(cyclesTaken).toBeLessThanOrEqual(4 + 2);
    expect(engine.status().requestsActive).toBe(8); // the long ones are still running
    expect(short.metadata.steps).toBe(4);
    await Promise.all(long);
    await engine.unload();
  });
});

describe('cancellation', () => {
  it('cancelling half of 16 running requests frees their bytes; the other 8 finish correctly', async () => {
    const engine = await newTinyEngine({ maxActive: 16 });
    const reqs = Array.from({ length: 16 }, (_, i) => ({ id: `c${i}`, prompt: `cancel test ${i}`, seed: 900 + i, steps: 6 }));
    // all sixteen have taken their first step: their latents and embeddings are held
    let stepped = 0;
    let allRunning!: () => void;
    const running = new Promise<void>((r) => (allRunning = r));
    const results = reqs.map((r) => engine.generate(r, { onProgress: (e) => e.status === 'step' && e.loaded === 1 && ++stepped === 16 && allRunning() }));
    await running;
    expect(engine.status().requestsActive).toBe(16);
    const before = engine.status().requestBytes;
    for (let i = 0; i < 16; i += 2) expect(engine.cancel(`c${i}`)).toBe(true);
    const after = engine.status().requestBytes;
    expect(after).toBeLessThan(before * 0.6); // freed at once, not at the end of the cycle
    const settled = await Promise.allSettled(results);
    const solo = await loadTinyEngine();
    for (let i = 0; i < 16; i++) {
      const s = settled[i];
      if (i % 2 === 0) {
        expect(s.status).toBe('rejected');
        expect((s as PromiseRejectedResult).reason).toBeInstanceOf(CancelledError);
      } else {
        expect(s.status).toBe('fulfilled');
        const alone = await solo.generate(reqs[i]);
        expect(maxPixelDiff((s as PromiseFulfilledResult<GenerateResult>).value.rgba, alone.rgba)).toBeLessThanOrEqual(1);
      }
    }
    expect(engine.status().requestBytes).toBe(0);
    expect(engine.status().requestsCancelled).toBe(8);
    await engine.unload();
  });

  it('an AbortSignal cancels at the next step boundary', async () => {
    const engine = await newTinyEngine();
    const ac = new AbortController();
    let steps = 0;
    const p = engine.generate({ prompt: 'abort me', seed: 1, steps: 50 }, {
      signal: ac.signal,
      onProgress: (e) => {
        if (e.status === 'step' && ++steps === 3) ac.abort();
      },
    });
    await expect(p).rejects.toBeInstanceOf(CancelledError);
    expect(steps).toBe(3);
    expect(engine.cancel('nope')).toBe(false);
    await engine.unload();
  });

  it('progress events carry step, total, elapsed time and a preview', async () => {
    const engine = await loadTinyEngine();
    const events: { status: string; loaded: number; total: number; elapsedMs?: number; w?: number }[] = [];
    await engine.generate({ prompt: 'progress', seed: 1, steps: 3 }, { preview: true, onProgress: (e) => events.push({ status: e.status, loaded: e.loaded, total: e.total, elapsedMs: e.elapsedMs, w: e.preview?.width }) });
    expect(events.map((e) => e.status)).toEqual(['queued', 'encoding', 'step', 'step', 'step', 'decoding', 'complete']);
    const stepEvents = events.filter((e) => e.status === 'step');
    expect(stepEvents.map((e) => [e.loaded, e.total])).toEqual([[1, 3], [2, 3], [3, 3]]);
    expect(stepEvents.every((e) => e.w === 8 && (e.elapsedMs ?? 0) > 0)).toBe(true);
  });
});

describe('admission by memory', () => {
  /** The tiny model's weights and one 64x64 guided request, as the engine counts them. */
  const sizes = async () => {
    const m = (await loadTinyEngine()).model!;
    const f = requestFootprint(m.dims, 64, 64, 4.5);
    return { weights: m.info.weightBytes, f, transient: f.row.activationBytes + f.decode.activationBytes };
  };

  it('never admits beyond the budget; waiting requests show as queued and all finish', async () => {
    const { weights, f, transient } = await sizes();
    // room for the largest transformer run and decode, and the state of three and a half requests
    const engine = await newTinyEngine({ deviceFit: { memoryBytes: weights + RESERVE_BYTES + transient + Math.floor(3.5 * f.stateBytes) } });
    let maxQueued = 0;
    let maxActive = 0;
    // every step event reports how many run and how many wait at that moment
    const watch = () => {
      maxQueued = Math.max(maxQueued, engine.status().requestsQueued);
      maxActive = Math.max(maxActive, engine.status().requestsActive);
    };
    await Promise.all(Array.from({ length: 10 }, (_, i) => engine.generate({ prompt: `budget ${i}`, seed: i, steps: 3 }, { onProgress: (e) => e.status === 'step' && watch() })));
    // ten submitted at once, three admitted: seven wait
    expect(maxQueued).toBe(7);
    expect(maxActive).toBe(3);
    const il = engine.status();
    expect(il.requestsServed).toBe(10);
    expect(il.peakAdmittedBytes).toBe(transient + 3 * f.stateBytes);
    expect(il.peakAdmittedBytes).toBeLessThanOrEqual(il.requestBudgetBytes);
    await engine.unload();
  });

  it('a request that could never fit is refused naming the largest size that does; others unaffected', async () => {
    const { weights, f, transient } = await sizes();
    const engine = await newTinyEngine({ deviceFit: { memoryBytes: weights + RESERVE_BYTES + transient + 2 * f.stateBytes } });
    const ok = engine.generate({ prompt: 'fits', seed: 1 });
    const err = await engine.generate({ prompt: 'too big', seed: 1, width: 512, height: 512 }).catch((e) => e);
    expect(err).toBeInstanceOf(TooLargeError);
    expect(err.message).toMatch(/512x512 with guidance needs ~.* beside the .* of weights, and .* of the .* GPU memory setting is left; the largest square size that fits is (\d+)x\1, or use guidance <= 1/);
    const side = Number(/fits is (\d+)x/.exec(err.message)![1]);
    expect(side).toBeGreaterThanOrEqual(64);
    expect(side).toBeLessThan(512);
    // the size it names really runs
    expect((await engine.generate({ prompt: 'largest', seed: 2, steps: 1, width: side, height: side })).rgba.length).toBe(side * side * 4);
    expect((await ok).metadata.prompt).toBe('fits');
    expect(engine.status().requestsQueued).toBe(0);
    await engine.unload();
  });

  it('a single buffer over the adapter limit is refused too', async () => {
    const engine = await newTinyEngine({ deviceFit: { maxBufferBytes: 256 * 1024 } });
    // the transformer's attention is cut into query chunks to fit; at 512x512 the VAE's one-head attention cannot
    expect(engine.model!.dims.transformerChunks).toBe(4);
    const err = await engine.generate({ prompt: 'x', width: 512, height: 512 }).catch((e) => e);
    expect(err).toBeInstanceOf(TooLargeError);
    expect(err.message).toMatch(/^one buffer at 512x512 would be 64\.0 MB, over this adapter's largest buffer \(256\.0 KB\); the largest square size that fits is (\d+)x\1$/);
    const { width } = err.largestFitting;
    expect((await engine.generate({ prompt: 'x', width, height: width, steps: 1 })).width).toBe(width);
    await engine.unload();
  });

  it('when memory holds one row per run, a guided request runs its two rows in two runs and gives the same image', async () => {
    const { weights, f } = await sizes();
    const engine = await newTinyEngine({ deviceFit: { memoryBytes: weights + RESERVE_BYTES + f.stateBytes + Math.floor(1.5 * f.row.activationBytes) + f.decode.activationBytes } });
    const r = { prompt: 'split rows', seed: 77, steps: 3, guidance: 5 };
    const split = await engine.generate(r);
    expect(engine.model!.transformer.runs).toBe(2 * r.steps);
    expect(engine.model!.transformer.rows).toBe(2 * r.steps);
    expect(engine.status().requestsServed).toBe(1);
    const whole = await (await loadTinyEngine()).generate(r);
    expect(maxPixelDiff(split.rgba, whole.rgba)).toBe(0);
    await engine.unload();
  });
});

describe('VAE decode in tiles', () => {
  it('one tile over the whole latent is exactly the whole decode; the first tile keeps its own pixels up to the seam', async () => {
    const m = (await loadTinyEngine()).model!;
    const [lh, lw] = [24, 32];
    const latents = new RequestRng(5).normal(16 * lh * lw);
    const [whole] = await decodeLatents(m, ort, [latents], lh, lw);
    expect(maxPixelDiff(await decodeTiled(m, ort, latents, lh, lw, 32), whole)).toBe(0);

    const tile = 16; // overlap 4 latents: each tile keeps its first 12 latents = 96 px
    const runs = m.vaeDecoder.runs;
    const tiled = await decodeTiled(m, ort, latents, lh, lw, tile);
    expect(m.vaeDecoder.runs - runs).toBe(2 * 3); // rows at 0 and 12; columns at 0, 12 and 24
    const corner = new Float32Array(16 * tile * tile);
    for (let c = 0; c < 16; c++) for (let y = 0; y < tile; y++) corner.set(latents.subarray((c * lh + y) * lw, (c * lh + y) * lw + tile), (c * tile + y) * tile);
    const [first] = await decodeLatents(m, ort, [corner], tile, tile);
    // the first tile's top-left 96x96 is blended with nothing: its own pixels
    for (let y = 0; y < 96; y++) {
      expect(Array.from(tiled.subarray((y * 256) * 4, (y * 256 + 96) * 4)), `row ${y}`).toEqual(Array.from(first.subarray(y * 128 * 4, (y * 128 + 96) * 4)));
    }
    // past the seam it is not that tile's pixels any more
    expect(maxPixelDiff(tiled.subarray(96 * 256 * 4, 97 * 256 * 4), first.subarray(96 * 128 * 4, 97 * 128 * 4).slice(0, 256 * 4))).toBeGreaterThan(0);
  });

  it('when a whole decode does not fit beside the weights, the engine decodes in the largest tiles that do, and says so', async () => {
    const m = (await loadTinyEngine()).model!;
    const whole = requestFootprint(m.dims, 256, 256, 1);
    const tiled = requestFootprint(m.dims, 256, 256, 1, 16);
    expect(tiled.decode.activationBytes).toBeLessThan(whole.decode.activationBytes);
    // room for one request with 128-px tiles, not for a whole 256x256 decode
    const engine = await newTinyEngine({ deviceFit: { memoryBytes: m.info.weightBytes + RESERVE_BYTES + tiled.stateBytes + tiled.row.activationBytes + tiled.decode.activationBytes } });
    const runs = engine.model!.vaeDecoder.runs;
    const r = await engine.generate({ prompt: 'tiles', seed: 4, steps: 1, guidance: 1, width: 256, height: 256 });
    expect(r.metadata.warnings).toEqual(['decoded in VAE tiles of 128 px to fit memory (seams blended; a whole decode differs slightly near them)']);
    expect(engine.model!.vaeDecoder.runs - runs).toBe(9); // 32 latents in tiles of 16 with a stride of 12: 3 x 3
    expect(r.rgba.length).toBe(256 * 256 * 4);
    await engine.unload();
  });
});
