// The page's wasm thread count: threads only where the page is cross-origin isolated and has 4 cores or more.
import { describe, expect, it } from 'vitest';
import { wasmThreads } from '../../workers/wasm-threads.ts';

describe('wasm threads in the page', () => {
  it('1 without isolation or under 4 cores; min(cores, 8) otherwise', () => {
    expect([wasmThreads(false, 16), wasmThreads(true, 2), wasmThreads(true, 3), wasmThreads(true, 4), wasmThreads(true, 6), wasmThreads(true, 32)]).toEqual([1, 1, 1, 4, 6, 8]);
  });
});
