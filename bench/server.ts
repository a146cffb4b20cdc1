// npm run bench -- --server: what the seed's HTTP API costs over the engine.
// The same 16 requests (bench/modes.ts's, 64x64, 4 steps, fixed seeds) go
// through one engine directly and through `npm run serve`'s server on the same
// engine, in alternating rounds (this machine is noisy); the figure is the
// ratio of wall times, best round each. HTTP includes the JSON, the PNG written
// to disk and the response; "with downloads" adds fetching all 16 PNGs back.
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createNodeEngine } from '../workers/engine/node.ts';
import { SeedServer } from '../server/seed-server.ts';
import { MAX_BATCH, req, STEPS } from './modes.ts';
import { writeResults } from './results-file.ts';

const MODEL = fileURLToPath(new URL('../public/models/tiny-sd3/', import.meta.url));
const N = 16;
const SIZE = 64;
const ROUNDS = 5;

export async function serverBench(out: string): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'sd3-bench-serve-'));
  const engine = createNodeEngine({ maxActive: 64, maxBatch: MAX_BATCH });
  await engine.load({ kind: 'path', path: MODEL });
  const server = new SeedServer({ engine, modelName: 'tiny-sd3', imagesDir: dir });
  const { port } = await server.listen(0, '127.0.0.1');
  const reqs = Array.from({ length: N }, (_, i) => req(i, SIZE));
  const body = (i: number) => JSON.stringify({ prompt: reqs[i].prompt, seed: reqs[i].seed, num_inference_steps: STEPS, width: SIZE, height: SIZE });
  const post = (i: number) => fetch(`http://127.0.0.1:${port}/api/diffusers/inference`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: body(i) });

  const direct = async () => {
    const t = performance.now();
    await Promise.all(reqs.map(async (r) => new Uint8Array(await (await engine.generate(r)).png.arrayBuffer())));
    return performance.now() - t;
  };
  const http = async (download: boolean) => {
    const t = performance.now();
    await Promise.all(
      reqs.map(async (_, i) => {
        const res = await post(i);
        if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
        const { response } = (await res.json()) as { response: string[] };
        if (download) await (await fetch(response[0])).arrayBuffer();
      }),
    );
    return performance.now() - t;
  };

  await direct(); // warm the shapes
  await http(true);
  const times = { direct: [] as number[], http: [] as number[], httpWithDownloads: [] as number[] };
  for (let round = 0; round < ROUNDS; round++) {
    times.direct.push(await direct());
    times.http.push(await http(false));
    times.httpWithDownloads.push(await http(true));
    process.stderr.write(`round ${round + 1}: direct ${times.direct.at(-1)!.toFixed(0)} ms, http ${times.http.at(-1)!.toFixed(0)} ms, with downloads ${times.httpWithDownloads.at(-1)!.toFixed(0)} ms\n`);
  }
  const best = (xs: number[]) => Math.min(...xs);
  const s = engine.status();
  const figures = {
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, node: process.version },
    backend: s.backend,
    model: 'tiny-sd3',
    requests: N,
    size: SIZE,
    steps: STEPS,
    rounds: ROUNDS,
    directMs: best(times.direct),
    httpMs: best(times.http),
    httpWithDownloadsMs: best(times.httpWithDownloads),
    /** HTTP wall time over the engine's alone, for the same 16 requests: 1 means no overhead. */
    overheadRatio: best(times.http) / best(times.direct),
    overheadRatioWithDownloads: best(times.httpWithDownloads) / best(times.direct),
    allMs: times,
    maxRowsPerRun: s.maxRowsPerRun,
  };
  console.table([{ 'direct ms': figures.directMs.toFixed(0), 'HTTP ms': figures.httpMs.toFixed(0), 'HTTP + downloads ms': figures.httpWithDownloadsMs.toFixed(0), 'HTTP / direct': figures.overheadRatio.toFixed(3), '(+ downloads)': figures.overheadRatioWithDownloads.toFixed(3) }]);
  await server.stop(0);
  await engine.unload();
  await rm(dir, { recursive: true, force: true });
  writeResults(out, 'server', figures);
}
