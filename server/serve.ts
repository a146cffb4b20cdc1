// npm run serve: the seed's HTTP API (diffusers' examples/server-async) over
// this project's engine, so the seed's clients work unchanged.
//   npm run serve -- --model <folder|url|hf:owner/repo> [--port 8500] [--host 127.0.0.1] [--images-dir DIR]
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { engineFlags, engineFromFlags, flagError, loadWithLog, numberFlag, readFlags } from '../cli/flags.ts';
import { parseModelArg } from '../workers/engine/node.ts';
import { SeedServer } from './seed-server.ts';

const USAGE = `usage: npm run serve -- --model <folder|url|hf:owner/repo> [--port 8500] [--host 127.0.0.1] [--images-dir DIR]
  [--backend auto|cpu|webgpu|cuda|dml|coreml|wasm] [--threads N] [--no-t5] [--gpu-memory GB] [--max-buffer-mb MB] [--concurrency N] [--max-batch N]
  [--cache-dir DIR | --no-cache] [--max-body-kb KB] [--grace S]
  Serves GET /, POST /api/diffusers/inference, GET /images/{filename} and GET /api/status as diffusers'
  server-async does. Images go to --images-dir (default: <system temp>/sd3-webgpu-images). SIGINT/SIGTERM stop
  accepting work, let running requests finish for --grace seconds (default 30), then cancel them; a second
  signal cancels at once. --backend auto (default): onnxruntime-node's first GPU provider that runs here
  (CUDA, DirectML, Core ML, WebGPU), else its CPU provider on every core (--threads N).`;

/** Parses the flags, loads the model, and serves until a signal; resolves with the exit code. */
export async function main(argv: string[], signals: NodeJS.Process = process): Promise<number> {
  const args = readFlags(
    argv,
    {
      port: { type: 'string', default: '8500' },
      host: { type: 'string', default: '127.0.0.1' },
      'images-dir': { type: 'string', default: join(tmpdir(), 'sd3-webgpu-images') },
      'max-body-kb': { type: 'string', default: '32768' },
      grace: { type: 'string', default: '30' },
    },
    USAGE,
  );
  if (typeof args === 'number') return args;
  const bad = flagError;
  const int = (v: string | undefined) => numberFlag(v) ?? NaN;
  const port = int(args.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) return bad('--port', 'an integer in 0..65535', args.port);
  const flags = engineFlags(args);
  if (flags === 2) return 2;
  const bodyKb = int(args['max-body-kb']);
  if (!(Number.isInteger(bodyKb) && bodyKb >= 1)) return bad('--max-body-kb', 'an integer >= 1', args['max-body-kb']);
  const grace = Number(args.grace);
  if (!(grace >= 0)) return bad('--grace', 'a number of seconds >= 0', args.grace);

  const engine = await engineFromFlags(flags);
  if (!engine) return 1;
  // the model loads once, before the port opens: GET / answers only when the server can serve
  if (!(await loadWithLog(engine, parseModelArg(args.model), args['no-t5']))) return 1;

  const server = new SeedServer({ engine, modelName: args.model, imagesDir: args['images-dir'], maxBodyBytes: bodyKb * 1024, ownsEngine: true });
  server.on('inference', ({ id, images }) => console.error(`${id}: ${images} image(s) queued`));
  server.on('inference-end', ({ id, outcome, status }) => console.error(`${id}: ${outcome}${status ? ` (${status})` : ''}`));
  let address;
  try {
    address = await server.listen(port, args.host);
  } catch (e) {
    console.error(`error: cannot listen on ${args.host}:${port} (${(e as Error).message})`);
    await engine.unload();
    return 1;
  }
  const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  console.log(`listening on http://${shown}:${address.port} (images in ${args['images-dir']})`);
  // the seed logs its counters every 5 s
  const metrics = setInterval(() => console.error(`[METRICS] total_requests=${server.totalRequests} active_inferences=${server.activeInferences}`), 5000);
  metrics.unref();

  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      console.error(`${signal}: no new requests; ${server.activeInferences} running, cancelled after ${grace} s`);
      // a second signal cancels what runs at once
      signals.once('SIGINT', () => void server.stop(0));
      signals.once('SIGTERM', () => void server.stop(0));
      void server.stop(grace * 1000).then(resolve);
    };
    signals.once('SIGINT', () => stop('SIGINT'));
    signals.once('SIGTERM', () => stop('SIGTERM'));
  });
  clearInterval(metrics);
  console.error('stopped');
  return 0;
}

if (process.argv[1]?.endsWith('serve.ts')) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
