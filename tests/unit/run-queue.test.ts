import { describe, expect, it } from 'vitest';
import { RunQueue } from '../../workers/engine/model/run-queue.ts';
import { loadTinyEngine } from '../helpers/tiny-engine.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('RunQueue', () => {
  it('never lets two calls overlap and keeps their order', async () => {
    const q = new RunQueue();
    let inside = 0;
    let overlaps = 0;
    const order: number[] = [];
    await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        q.run(async () => {
          inside++;
          if (inside > 1) overlaps++;
          await sleep(Math.random() * 3);
          order.push(i);
          inside--;
        }),
      ),
    );
    expect(overlaps).toBe(0);
    expect(q.maxInFlight).toBe(1);
    expect(order).toEqual([...Array(20).keys()]);
    expect(q.pending).toBe(0);
  });

  it('a failing call does not block the next', async () => {
    const q = new RunQueue();
    const failed = q.run(async () => {
      throw new Error('boom');
    });
    await expect(failed).rejects.toThrow('boom');
    await expect(q.run(async () => 42)).resolves.toBe(42);
  });

  it('concurrent generate() calls never reach a real session together', async () => {
    const engine = await loadTinyEngine();
    await Promise.all(Array.from({ length: 6 }, (_, i) => engine.generate({ prompt: `p${i}`, seed: i, steps: 2 })));
    const m = engine.model!;
    for (const s of [m.clipL.session, m.clipG.session, m.t5!.session, m.transformer, m.vaeDecoder]) {
      expect(s.runs, s.name).toBeGreaterThanOrEqual(1);
      expect(s.maxInFlight, s.name).toBe(1);
    }
    // six requests of two steps each: at least two transformer runs, at most one per request and step
    expect(m.transformer.runs).toBeGreaterThanOrEqual(2);
    expect(m.transformer.runs).toBeLessThanOrEqual(12);
  });

  it('two engines loading and generating at once share one device queue: one onnxruntime call at a time', async () => {
    // WebGPU refuses a session create while another is in progress, so loads count too
    const [a, b] = await Promise.all([loadTinyEngine(), loadTinyEngine()]);
    await Promise.all([a, b].flatMap((e, k) => Array.from({ length: 3 }, (_, i) => e.generate({ prompt: `p${i}`, seed: 10 * k + i, steps: 2 }))));
    const sessions = [a, b].flatMap((e) => [e.model!.clipL.session, e.model!.transformer, e.model!.vaeDecoder]);
    const queue = sessions[0].queue;
    for (const s of sessions) expect(s.queue).toBe(queue);
    expect(queue.maxInFlight).toBe(1);
    expect(queue.pending).toBe(0);
  });
});
