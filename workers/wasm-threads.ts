// How many threads the page's wasm backend runs on. Threads need cross-origin
// isolation (SharedArrayBuffer), which the app's servers do not send for now
// (README: "Threads in the page"), so the page runs on 1. With fewer than 4 cores they stay at 1: on
// this project's 2-core machine two threads gained only 1.24x per step, and
// under CPU load the page's threaded wasm stalled for good (a load or a
// generation never ended: 2 of 5 loaded runs of models.test.ts, none of 3 on
// one thread), so a 2-core machine is safer and barely slower on one.
export const MIN_CORES_FOR_THREADS = 4;

export function wasmThreads(isolated: boolean, cores: number): number {
  if (!isolated || !(cores >= MIN_CORES_FOR_THREADS)) return 1;
  return Math.min(cores, 8);
}
