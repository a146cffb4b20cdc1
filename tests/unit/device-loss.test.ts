// One subscription to a GPU device's loss (device-loss.ts), and denoisers that
// hold no listener for their life: a denoiser's listener would keep its model
// reachable after a switch, until a loss that may never come. Node has no
// WebGPU, so the device here is what the module reads of one: its `lost`
// promise, settled the way a browser settles it.
import * as ort from 'onnxruntime-web';
import { describe, expect, it } from 'vitest';
import { WebGpuDenoiser } from '../../workers/engine/denoise/webgpu-denoiser.ts';
import { deviceLoss, type LosableDevice } from '../../workers/engine/device-loss.ts';
import type { Ort } from '../../workers/engine/model/component-session.ts';
import { loadTinyEngine } from '../helpers/tiny-engine.ts';

type LostInfo = { reason: string; message: string };
/** A device's loss as a browser reports it, counting who subscribed to `lost` (each `then` keeps its callback, and what that names, until the loss). */
function device(): LosableDevice & { lose(info: LostInfo): void; subscriptions: number } {
  let lose!: (info: LostInfo) => void;
  const lost = new Promise<LostInfo>((r) => (lose = r));
  const d = { lost, lose, subscriptions: 0 };
  const then = lost.then.bind(lost);
  lost.then = ((...args: Parameters<typeof then>) => {
    d.subscriptions++;
    return then(...args);
  }) as typeof lost.then;
  return d;
}

describe('device loss: one subscription per device', () => {
  it('one watcher per device; listeners hear the loss once, removed ones not at all, late ones at once; none stays registered', async () => {
    const d = device();
    const loss = deviceLoss(d);
    expect(deviceLoss(d)).toBe(loss);
    const heard: string[] = [];
    const stopA = loss.listen((r) => heard.push(`a:${r}`));
    loss.listen((r) => heard.push(`b:${r}`));
    expect(loss.listenerCount).toBe(2);
    stopA();
    expect(loss.listenerCount).toBe(1);
    d.lose({ reason: 'unknown', message: 'GPU process exited' });
    await d.lost;
    expect(heard).toEqual(['b:GPU process exited']);
    expect(loss.reason).toBe('GPU process exited');
    expect(loss.listenerCount).toBe(0);
    loss.listen((r) => heard.push(`late:${r}`));
    expect(heard.at(-1)).toBe('late:GPU process exited');
    expect(loss.listenerCount).toBe(0);
  });

  it('waiting for a loss holds a listener only while it waits', async () => {
    const d = device();
    const loss = deviceLoss(d);
    // a wait that times out
    const quiet = loss.within(5);
    expect(loss.listenerCount).toBe(1);
    expect(await quiet).toBeNull();
    expect(loss.listenerCount).toBe(0);
    // a wait the loss ends (a destroyed device reports no message, only its reason)
    const waiting = loss.within(60_000);
    expect(loss.listenerCount).toBe(1);
    d.lose({ reason: 'destroyed', message: '' });
    expect(await waiting).toBe('destroyed');
    expect(loss.listenerCount).toBe(0);
  });

  it('denoisers made for one model after another register nothing that lasts', async () => {
    const model = (await loadTinyEngine()).model!;
    const d = device();
    const gpu = d as unknown as GPUDevice;
    const loss = deviceLoss(d);
    // the engine's own listener, as createBrowserEngine registers it
    const engineHeard: string[] = [];
    loss.listen((r) => engineHeard.push(r));
    [1, 2, 3].map(() => new WebGpuDenoiser(gpu, model, ort as unknown as Ort));
    expect(loss.listenerCount).toBe(1);
    // the device's lost promise has one subscriber: the watcher
    expect(d.subscriptions).toBe(1);
    d.lose({ reason: 'unknown', message: 'device hung' });
    await loss.within(60_000);
    expect(engineHeard).toEqual(['device hung']);
    expect(loss.listenerCount).toBe(0);
    expect(d.subscriptions).toBe(1);
    // which failure was a loss is the interleaver's verdict, for every stage alike: engine-defects.test.ts
  });
});
