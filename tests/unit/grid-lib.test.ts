// The grid's pure parts: the batch's counts, text and pace; messages without
// ids and with model names; deletes that wait for an Undo; the form's snapshot.
import { describe, expect, it } from 'vitest';
import { BatchProgress, batchText, batchTitle, type BatchJob } from '../../src/lib/batch-progress.ts';
import { GenerationForm } from '../../src/lib/generation-form.svelte.ts';
import { plainMessage } from '../../src/lib/messages.ts';
import { PendingDeletes } from '../../src/lib/pending-deletes.svelte.ts';
import { CancelledError, InferenceError } from '../../workers/engine/errors.ts';
import { modelName } from '../../workers/engine/model-name.ts';

class FakeJob implements BatchJob {
  state = 'queued';
  step = 0;
  total = 10;
  unsaved = false;
  get active() {
    return !['done', 'failed', 'cancelled'].includes(this.state);
  }
}
const jobs = (n: number) => Array.from({ length: n }, () => new FakeJob());

describe('batch progress', () => {
  it('counts failed and cancelled images as such, and says "done" only when every image was made', () => {
    const batch = new BatchProgress();
    const grid = jobs(9);
    batch.update(grid, 0);
    grid.slice(0, 5).forEach((j) => (j.state = 'done'));
    grid.slice(5, 8).forEach((j) => (j.state = 'failed'));
    grid[8].state = 'cancelled';
    const v = batch.update(grid, 1);
    expect(batchText(v)).toBe('5/9 images · 3 failed · 1 cancelled');
    expect(batchTitle(v)).toBe('5/9 · 3 failed · 1 cancelled · SD3 WebGPU');
    grid.forEach((j) => (j.state = 'failed'));
    expect(batchText(batch.update(grid, 2))).toBe('0/9 images · 9 failed');
    const ok = jobs(2);
    batch.update(ok, 3);
    ok.forEach((j) => (j.state = 'done'));
    const done = batch.update(ok, 4);
    expect([batchText(done), batchTitle(done)]).toEqual(['2/2 images · done', 'SD3 WebGPU']);
  });

  it('an image made but not stored yet counts as made', () => {
    const batch = new BatchProgress();
    const [a] = jobs(1);
    batch.update([a], 0);
    a.state = 'failed';
    a.unsaved = true;
    expect(batchText(batch.update([a], 1))).toBe('1/1 images · done');
  });

  it('time left keeps the batch pace when work is added mid-batch, and counts survive clearing finished cells', () => {
    const batch = new BatchProgress();
    const grid = jobs(2);
    batch.update(grid, 0);
    // 2 images × 10 steps at 1 step per 100 ms each: 20 steps a second
    for (let t = 1; t <= 4; t++) {
      grid.forEach((j) => ((j.state = 'denoising'), (j.step = t)));
      batch.update(grid, t * 100);
    }
    const before = batch.update(grid, 400);
    expect(before.etaMs).toBeCloseTo(12 / 0.02, 0); // 12 steps left at 0.02 steps/ms
    // 2 more images join: 20 more steps, at the same pace
    const more = [...grid, ...jobs(2)];
    const after = batch.update(more, 400);
    expect(after.jobs).toBe(4);
    expect(after.etaMs).toBeCloseTo(32 / 0.02, 0);
    expect(after.steps).toBe(before.steps); // the batch did not start over
    // the first two finish; the grid clears them; the batch still counts them
    grid.forEach((j) => ((j.state = 'done'), (j.step = 10)));
    const cleared = batch.update(more.slice(2), 500);
    expect([cleared.jobs, cleared.made, cleared.running]).toEqual([4, 2, 2]);
  });

  it('a replayed image starting over is not counted as pace; a refused one leaves the batch', () => {
    const batch = new BatchProgress();
    const [a, b] = jobs(2);
    batch.update([a, b], 0);
    a.state = 'denoising';
    a.step = 5;
    batch.update([a, b], 100);
    a.step = 0; // replayed after a restart
    batch.update([a, b], 200);
    a.step = 1;
    const v = batch.update([a, b], 300);
    expect(v.etaMs).toBeCloseTo((9 + 10) / (6 / 300), 0);
    // b was refused (bad input) and taken out of the grid while queued
    expect(batch.update([a], 400).jobs).toBe(1);
  });
});

describe('messages', () => {
  it('name models by name and carry no request ids', () => {
    expect(modelName('http://127.0.0.1:4173/models/tiny-sd3/')).toBe('tiny-sd3');
    expect(modelName('https://huggingface.co/acme/sd3/resolve/main/onnx')).toBe('acme/sd3/onnx');
    expect(modelName('acme/sd3@v2')).toBe('acme/sd3@v2');
    // an engine error concerning one request names it in a field, not in its message
    const e = new InferenceError('non-finite values at step 3; the request was stopped, others carry on', { requestId: '5b0e1d5c-8d0a-4a59-9f5b-7d9d1f3a2b10' });
    expect(e.toJSON()).toEqual({ name: 'InferenceError', code: 'inference', message: 'non-finite values at step 3; the request was stopped, others carry on', requestId: '5b0e1d5c-8d0a-4a59-9f5b-7d9d1f3a2b10' });
    expect(new CancelledError('5b0e1d5c-8d0a-4a59-9f5b-7d9d1f3a2b10').message).toBe('the request was cancelled');
    expect(plainMessage('request 5b0e1d5c-8d0a-4a59-9f5b-7d9d1f3a2b10: non-finite values at step 3; the request was stopped, others carry on')).toBe('non-finite values at step 3; the request was stopped, others carry on');
    expect(plainMessage('request 5B0E1D5C-8D0A-4A59-9F5B-7D9D1F3A2B10 was stopped: the engine switched from model http://h/m/a/ to http://h/m/b/ while it ran')).toBe('this request was stopped: the engine switched from model a to b while it ran');
  });
});

describe('deletes with undo', () => {
  it('hide at once, delete on timeout, and come back untouched on Undo', async () => {
    const deleted: string[][] = [];
    let committed!: () => void;
    let commit = new Promise<void>((r) => (committed = r));
    const pending = new PendingDeletes(async (ids) => {
      deleted.push(ids);
      committed();
    }, 5);
    pending.delete(['a']);
    expect([...pending.hidden]).toEqual(['a']);
    pending.undo();
    expect([[...pending.hidden], pending.toast, deleted]).toEqual([[], null, []]);
    pending.delete(['b', 'c']);
    expect(pending.toast?.text).toBe('2 images deleted.');
    await commit;
    expect(deleted).toEqual([['b', 'c']]);
    // a newer delete commits the older one first
    commit = new Promise<void>((r) => (committed = r));
    pending.delete(['d']);
    pending.delete(['e']);
    expect(deleted).toEqual([['b', 'c'], ['d']]);
    pending.undo();
    expect(deleted).toEqual([['b', 'c'], ['d']]);
  });

  it('a delete that fails brings the images back into view', async () => {
    const pending = new PendingDeletes(async () => {
      throw new Error('storage refused');
    }, 60_000);
    pending.delete(['x']);
    await expect(pending.flush()).rejects.toThrow('storage refused');
    expect([...pending.hidden]).toEqual([]);
  });
});

describe('the form across a reload', () => {
  it('restores what it saved and ignores what is not its own', () => {
    const form = new GenerationForm();
    Object.assign(form, { prompts: 'a fox\na cat', negativePrompt: 'fog', seed: 7, steps: 12, guidance: 4.5, width: 96, height: 64, count: 3, defaultsFor: 'tiny' });
    const saved = JSON.parse(JSON.stringify(form.snapshot()));
    const again = new GenerationForm();
    again.restore(saved);
    expect(again.snapshot()).toEqual(form.snapshot());
    const odd = new GenerationForm();
    odd.restore({ prompts: 3, seed: 'x', steps: null, count: 99 });
    expect(odd.snapshot()).toEqual({ prompts: '', negativePrompt: '', seed: null, steps: null, guidance: null, width: null, height: null, count: 1, defaultsFor: null });
  });
});
