// Four defects a read of the engine found (issue 31), each pinned by a test
// that failed before its fix:
//   1. a request accepted before a model switch ran with the old model's
//      defaults and was never checked against the new model's limits;
//   2. a decode run planned up front still held requests that had ended,
//      and failed the others in it;
//   3. a device loss reported just after a failed call (the browser reports it
//      late) turned into an inference error, so the request was not replayed;
//      and any error made the step loop wait for that report;
//   4. a request submitted while the step loop was winding down never ran.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GenerateResult } from '../../workers/engine/api/types.ts';
import type { Engine } from '../../workers/engine/engine.ts';
import { DeviceLoss } from '../../workers/engine/device-loss.ts';
import { CancelledError } from '../../workers/engine/errors.ts';
import type { Feeds } from '../../workers/engine/model/component-session.ts';
import { createNodeEngine } from '../../workers/engine/node.ts';
import { parseA1111, pngTextChunks } from '../../workers/engine/png/settings-chunks.ts';
import { PRESETS } from '../../tools/model-builder/presets.ts';
import { buildTemp, tinySpec, type BuiltModel } from '../helpers/built-models.ts';
import { maxPixelDiff, newTinyEngine } from '../helpers/tiny-engine.ts';

/** The A1111 `parameters` chunk of a result's PNG, as pairs. */
async function pngParameters(r: GenerateResult): Promise<Record<string, string>> {
  const text = pngTextChunks(new Uint8Array(await r.png.arrayBuffer())).get('parameters') ?? '';
  const { settings } = parseA1111(text);
  return { steps: String(settings.steps), guidance: String(settings.guidance), size: `${settings.width}x${settings.height}` };
}

describe('defaults and limits come from the model that runs the request', () => {
  // a Turbo-shaped model (4 steps, no guidance, up to 512 px) and an SD3-medium-shaped one (other defaults, up to 256 px)
  let turbo: BuiltModel;
  let medium: BuiltModel;
  beforeAll(async () => {
    turbo = await buildTemp(tinySpec({ id: 'sd3-webgpu/tiny-large-turbo', preset: { ...PRESETS.tiny, name: 'tiny-large-turbo', defaults: { steps: 4, guidance: 0 } } }));
    medium = await buildTemp(
      tinySpec({
        id: 'sd3-webgpu/tiny-medium',
        preset: { ...PRESETS.tiny, name: 'tiny-medium', transformer: { ...PRESETS.tiny.transformer, sampleSize: 12, posEmbedMaxSize: 16 }, defaults: { steps: 6, guidance: 7 } },
      }),
    );
  });
  afterAll(async () => {
    await turbo?.remove();
    await medium?.remove();
  });

  it('a switch from a Turbo-shaped model to an SD3-medium-shaped one: requests with empty steps run with the new defaults (in their PNG), a size only the old model took ends naming the field', async () => {
    const engine = createNodeEngine({ maxActive: 1 });
    const first = await engine.load({ kind: 'path', path: turbo.dir });
    expect(first.defaults).toMatchObject({ steps: 4, guidance: 0, width: 64 });
    // queued on the old model (one runs at a time), then accepted during the load, as the worker does:
    // normalized against the model loaded at that instant, stored, and submitted as normalized
    const queuedOnOld = [engine.normalize({ id: 'q0', prompt: 'a lighthouse', seed: 7 }), engine.normalize({ id: 'q1', prompt: 'a lighthouse', seed: 8 })];
    // the old model's one running request holds its first transformer run until the new model is in: the others stay queued
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    const oldTransformer = engine.model!.transformer;
    const oldRun = oldTransformer.run.bind(oldTransformer);
    oldTransformer.run = async (feeds, names) => {
      await gate;
      return oldRun(feeds, names);
    };
    const blocker = engine.generate({ id: 'running', prompt: 'keeps the old model busy', seed: 1 });
    const queued = queuedOnOld.map((r) => engine.generate(r, { normalized: true }));
    const switching = engine.load({ kind: 'path', path: medium.dir });
    const duringLoad = [
      engine.normalize({ id: 'l0', prompt: 'a lighthouse at dusk', seed: 9 }),
      engine.normalize({ id: 'l1', prompt: 'a lighthouse at dusk', seed: 10, steps: 3 }),
      engine.normalize({ id: 'l2', prompt: 'wide', seed: 11, width: 512, height: 512 }),
    ];
    // what the old model filled in: the defaults the stale code kept
    expect(duringLoad[0]).toMatchObject({ steps: 4, guidance: 0, width: 64 });
    const accepted = duringLoad.map((r) => engine.generate(r, { normalized: true }));
    const second = await switching;
    expect(second.defaults).toMatchObject({ steps: 6, guidance: 7, width: 96, height: 96 });
    expect(second.limits.maxSize).toBe(256);
    open();
    expect((await blocker).metadata).toMatchObject({ modelId: first.id, steps: 4, guidance: 0 });
    const [q0, q1] = await Promise.all(queued);
    const [l0, l1, l2] = await Promise.allSettled(accepted);
    for (const r of [q0, q1, (l0 as PromiseFulfilledResult<GenerateResult>).value]) {
      expect(r.metadata).toMatchObject({ modelId: second.id, steps: 6, guidance: 7, width: 96, height: 96 });
      expect(await pngParameters(r)).toEqual({ steps: '6', guidance: '7', size: '96x96' });
    }
    // a field the person set is kept
    expect(l1.status).toBe('fulfilled');
    expect((l1 as PromiseFulfilledResult<GenerateResult>).value.metadata).toMatchObject({ steps: 3, guidance: 7, width: 96 });
    expect(await pngParameters((l1 as PromiseFulfilledResult<GenerateResult>).value)).toEqual({ steps: '3', guidance: '7', size: '96x96' });
    // a size the new model cannot make: it ends with the field, the range and the model that refused it
    expect(l2.status).toBe('rejected');
    const refusal = (l2 as PromiseRejectedResult).reason;
    expect(refusal).toMatchObject({ code: 'invalid_request', field: 'width' });
    expect(refusal.message).toMatch(new RegExp(`^width: expected an integer in \\d+\\.\\.256.*got 512 \\(${second.id}, the model loaded since`));
    // the same images a request sent to the new model directly gives
    const direct = await newTinyEngine({}, medium.dir);
    const expected = await direct.generate({ prompt: 'a lighthouse', seed: 7 });
    expect(maxPixelDiff(q0.rgba, expected.rgba)).toBe(0);
    await Promise.all([engine.unload(), direct.unload()]);
  });
});

describe('engine defects', () => {
  const reqs = (n: number, tag: string) => Array.from({ length: n }, (_, i) => ({ id: `${tag}${i}`, prompt: `decode ${i}`, seed: 40 + i, steps: 2 }));

  it('a decode run skips requests that ended during an earlier run (cancelled, or a progress callback that threw) and decodes the others', async () => {
    const reference = await newTinyEngine();
    const requests = reqs(4, 'd');
    const expected = await Promise.all(requests.map((r) => reference.generate({ ...r, id: undefined })));
    // two requests per VAE run: [d0, d1] then [d2, d3]
    const engine = await newTinyEngine({ maxBatch: 2 });
    const runs = requests.map((r, i) =>
      engine.generate(r, {
        onProgress: (e) => {
          if (e.status !== 'decoding') return;
          if (i === 0) engine.cancel('d2'); // while the first decode run is about to start, d2 (of the second run) is cancelled
          if (i === 1) throw new Error('a UI callback that broke'); // d1 ends in its own run
        },
      }),
    );
    const results = await Promise.allSettled(runs);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'rejected', 'fulfilled']);
    expect((results[2] as PromiseRejectedResult).reason).toBeInstanceOf(CancelledError);
    expect((results[1] as PromiseRejectedResult).reason.message).toMatch(/progress callback threw/);
    for (const i of [0, 3]) expect(maxPixelDiff((results[i] as PromiseFulfilledResult<GenerateResult>).value.rgba, expected[i].rgba)).toBe(0);
    await Promise.all([engine.unload(), reference.unload()]);
  });

  it('a request submitted as the loop winds down (after a cancel emptied it) runs', async () => {
    const engine = await newTinyEngine();
    const first = engine.generate({ id: 'gone', prompt: 'cancelled at once', seed: 1, steps: 1 });
    engine.cancel('gone');
    let second: Promise<GenerateResult> | undefined;
    await first.catch(() => {
      second = engine.generate({ id: 'next', prompt: 'sent from the catch', seed: 2, steps: 1 });
    });
    await engine.idle();
    // idle means nothing is queued: before the fix 'next' sat in the queue with no loop to run it
    expect(engine.status().requestsQueued).toBe(0);
    await expect(second).resolves.toMatchObject({ id: 'next' });
    await engine.unload();
  });
});

describe('a device loss, whichever stage sees it first', () => {
  /** A stand-in for a GPUDevice's `lost` promise: the browser reports a loss some time after the call that met it. */
  const fakeDevice = () => {
    let lose!: (info: { message: string }) => void;
    const device = { lost: new Promise<{ message: string }>((r) => (lose = r)) };
    return { device, lose: (message: string) => lose({ message }) };
  };

  /** An engine whose requests run on a device that can be lost: the browser entry's wiring (browser-engine.ts). */
  async function engineOn(loss: DeviceLoss, lossReportMs = 600_000): Promise<Engine> {
    const engine = await newTinyEngine({ gpuLoss: loss, lossReportMs });
    loss.listen((reason) => engine.deviceLost(reason));
    return engine;
  }

  it('a loss reported just after a text encoder failed ends the request with device_lost (so the worker replays it)', async () => {
    const { device, lose } = fakeDevice();
    const engine = await engineOn(new DeviceLoss(device));
    const clip = engine.model!.clipL.session;
    clip.run = async () => {
      setTimeout(() => lose('simulated: the GPU process reset'), 20);
      throw new Error('Failed to run the session: buffer mapping aborted');
    };
    const err = await engine.generate({ prompt: 'on a GPU about to go', seed: 3, steps: 1 }).catch((e) => e);
    expect(err).toMatchObject({ code: 'device_lost', reason: 'simulated: the GPU process reset' });
    await engine.unload();
  });

  it('while a failed run waits for the device’s verdict, the other requests go on; a loss then ends it as device_lost, a logic error never waits', async () => {
    const { device, lose } = fakeDevice();
    const engine = await engineOn(new DeviceLoss(device));
    const transformer = engine.model!.transformer;
    const run = transformer.run.bind(transformer);
    // sizes never share a transformer run: 64 px meets a GPU fault, 96 px a bug, 128 px nothing
    transformer.run = async (feeds: Feeds, names?: readonly string[]) => {
      const [, , h] = feeds.hidden_states.dims;
      if (h === 8) throw new Error('WebGPU: a submit failed');
      if (h === 12) throw new TypeError('a bug: x is undefined');
      return run(feeds, names);
    };
    const order: string[] = [];
    const track = (name: string, p: Promise<unknown>) => p.then(() => order.push(`${name} done`), (e) => order.push(`${name} ${e.code}`));
    const waiting = track('gpu-fault', engine.generate({ prompt: 'meets a GPU fault', seed: 4, steps: 3 }));
    const bug = track('bug', engine.generate({ prompt: 'meets a bug', seed: 5, steps: 3, width: 96, height: 96 }));
    const other = track('other', engine.generate({ prompt: 'goes on', seed: 6, steps: 3, width: 128, height: 128 }));
    await Promise.all([bug, other]);
    // the bug failed at once, the other request finished, the GPU fault is still waiting for the device's word
    expect(order).toEqual(['bug inference', 'other done']);
    expect(engine.status().requestsActive).toBe(0);
    lose('simulated: device destroyed');
    await waiting;
    expect(order).toEqual(['bug inference', 'other done', 'gpu-fault device_lost']);
    await engine.unload();
  });

  it('with no loss within the report window, the failure is the request’s own, with onnxruntime’s error as its cause', async () => {
    const { device } = fakeDevice();
    const engine = await engineOn(new DeviceLoss(device), 50);
    const transformer = engine.model!.transformer;
    const cause = new Error('WebGPU: out of memory in a run');
    transformer.run = async () => {
      throw cause;
    };
    const err = await engine.generate({ prompt: 'fails alone', seed: 7, steps: 1 }).catch((e) => e);
    expect(err).toMatchObject({ code: 'inference' });
    expect(err.message).toMatch(/transformer run failed: WebGPU: out of memory in a run/);
    expect(err.cause).toBe(cause);
    await engine.unload();
  });
});
