// The seed's HTTP API (diffusers' examples/server-async) over one engine:
//   GET  /                         {"message": "Welcome to the Diffusers Server"}
//   POST /api/diffusers/inference  {"response": [absolute image URLs]}; with `image` (and `mask_image`,
//                                  `strength`, `padding_mask_crop`) image to image and inpainting, the
//                                  images sent as base64 PNGs or as URLs of images this server made
//   GET  /images/{filename}        the PNG, or 404 {"detail": "Image not found"}
//   GET  /api/status               the seed's fields plus ours
// Every image of every request is one engine request, so all of them share the
// interleaver exactly as the page's requests do. node:http is enough: the
// routes are four, and validation is the engine's own (no schema library to
// keep in step with it).
import { EventEmitter, once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { GenerateResult, ProgressEvent } from '../workers/engine/api/types.ts';
import type { Engine } from '../workers/engine/engine.ts';
import { CancelledError, EngineError, InvalidRequestError, TooLargeError } from '../workers/engine/errors.ts';
import { clientInput, HttpError, IMAGE_INPUT_ALLOWED, IMAGE_INPUTS, inputError, rangeError, readImageInput, readSeedRequest, type ImageInputField, type SeedRequest } from './seed-request.ts';

export interface SeedServerOptions {
  engine: Engine;
  /** What `current_model` reports: the model as the operator named it. */
  modelName: string;
  /** Where PNGs are written (the seed: the system temp folder). */
  imagesDir: string;
  /** Largest request body in bytes (default 1 MiB: a prompt is at most 20,000 characters; base64 images count in it). */
  maxBodyBytes?: number;
  /** The server unloads the engine when it stops (the serve command's own engine). */
  ownsEngine?: boolean;
}

/** How one inference request ended, for logs and tests (emitted once the engine has counted it). */
export interface InferenceEnd {
  id: string;
  images: number;
  outcome: 'done' | 'cancelled' | 'failed' | 'client-gone';
  status: number | null;
}

const IMAGE_NAME = /^img[0-9a-f]{8}\.png$/;
const HOST = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$/;
// init images and masks come as base64 inside the JSON body
const DEFAULT_MAX_BODY = 32 * 1024 * 1024;

class ClientGone extends Error {}
class ShuttingDown extends Error {}

export class SeedServer extends EventEmitter<{
  inference: [{ id: string; images: number }];
  progress: [{ id: string; event: ProgressEvent }];
  'inference-end': [InferenceEnd];
  stopped: [];
}> {
  readonly http: Server;
  /** Requests seen (all routes), as the seed's middleware counts them. */
  totalRequests = 0;
  private readonly inflight = new Map<string, { controller: AbortController; settled: Promise<unknown> }>();
  /** Only images this server made are served: names are never paths. */
  private readonly made = new Set<string>();
  private stopping: Promise<void> | null = null;
  private endGrace: (() => void) | null = null;
  private readonly maxBody: number;

  constructor(private readonly opts: SeedServerOptions) {
    super();
    if (!opts.engine.status().model) throw new Error('load the model before serving: GET / answers only when the server can serve');
    this.maxBody = opts.maxBodyBytes ?? DEFAULT_MAX_BODY;
    this.http = createServer((req, res) => void this.handle(req, res));
  }

  /** Inference requests (not images) running now. */
  get activeInferences(): number {
    return this.inflight.size;
  }

  async listen(port: number, host: string): Promise<AddressInfo> {
    await mkdir(this.opts.imagesDir, { recursive: true });
    this.http.listen(port, host);
    await once(this.http, 'listening');
    return this.http.address() as AddressInfo;
  }

  /**
   * Stops accepting work, lets what runs finish for up to `graceMs`, then
   * cancels the rest (their clients get 503), and closes every connection.
   */
  stop(graceMs = 30_000): Promise<void> {
    // a second call (a second signal) with no grace cancels at once
    if (this.stopping && graceMs === 0) this.endGrace?.();
    this.stopping ??= (async () => {
      const closed = new Promise<void>((resolve) => this.http.close(() => resolve()));
      this.http.closeIdleConnections();
      const running = Promise.allSettled([...this.inflight.values()].map((f) => f.settled));
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, graceMs);
        this.endGrace = resolve;
      });
      await Promise.race([running, late]);
      clearTimeout(timer);
      for (const f of this.inflight.values()) f.controller.abort(new ShuttingDown());
      await Promise.allSettled([...this.inflight.values()].map((f) => f.settled));
      this.http.closeAllConnections();
      await closed;
      if (this.opts.ownsEngine) await this.opts.engine.unload();
      this.emit('stopped');
    })();
    return this.stopping;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.totalRequests++;
    cors(req, res);
    const path = (req.url ?? '/').split('?')[0];
    try {
      if (req.method === 'OPTIONS' && req.headers['access-control-request-method']) return preflight(req, res);
      if (this.stopping) {
        res.setHeader('Connection', 'close');
        throw new HttpError(503, 'Server is shutting down');
      }
      const route = (method: string) => {
        if (req.method !== method) {
          res.setHeader('Allow', method);
          throw new HttpError(405, 'Method Not Allowed');
        }
      };
      if (path === '/') {
        route('GET');
        return json(res, 200, { message: 'Welcome to the Diffusers Server' });
      }
      if (path === '/api/status') {
        route('GET');
        return json(res, 200, this.status());
      }
      if (path === '/api/diffusers/inference') {
        route('POST');
        return await this.inference(req, res);
      }
      if (path.startsWith('/images/')) {
        route('GET');
        return await this.image(path.slice('/images/'.length), res);
      }
      throw new HttpError(404, 'Not Found');
    } catch (e) {
      if (e instanceof ClientGone || res.destroyed) return;
      const err = e instanceof HttpError ? e : new HttpError(500, `Error in processing: ${(e as Error).message ?? e}`);
      if (!res.headersSent) json(res, err.status, { detail: err.detail });
      else res.destroy();
    }
  }

  status() {
    const s = this.opts.engine.status();
    const gb = (b: number) => Math.round((b / 1024 ** 3) * 100) / 100;
    const resident = s.memory?.residentWeightBytes ?? s.weightBytes;
    const allocated = resident + s.requestBytes;
    return {
      // the seed's fields
      current_model: this.opts.modelName,
      type_models: 't2im',
      memory: {
        // as PyTorch means them: allocated = what tensors hold now (every resident model's weights, a draining one's
        // too, and the requests' own tensors); reserved = what the runtime may hold for them (the requests admitted
        // with their runs' activations), never below allocated
        memory_allocated_gb: gb(allocated),
        memory_reserved_gb: gb(Math.max(allocated, resident + s.admittedBytes)),
        device: s.runtime?.device ?? s.adapter ?? s.backend,
        weights_bytes: s.weightBytes,
        requests_bytes: s.requestBytes,
        admitted_bytes: s.admittedBytes,
        // the whole memory budget, and the part the loaded model's requests may take beside its weights
        budget_bytes: s.memory?.budgetBytes ?? 0,
        request_budget_bytes: s.requestBudgetBytes,
      },
      // ours: images (each an engine request) and HTTP requests
      backend: s.backend ?? s.runtime?.backend ?? null,
      adapter: s.adapter,
      // the runtime: native onnxruntime or onnxruntime-web, its threads, and why faster backends were not used
      runtime: s.runtime && { name: s.runtime.runtime, backend: s.runtime.backend, choice: s.runtime.choice, threads: s.runtime.threads, device: s.runtime.device, unavailable: s.runtime.unavailable },
      model: s.model && { id: s.model.id, family: s.model.family, defaults: s.model.defaults, limits: s.model.limits, has_t5: s.model.hasT5 },
      active: s.requestsActive,
      queued: s.requestsQueued,
      served: s.requestsServed,
      failed: s.requestsFailed,
      cancelled: s.requestsCancelled,
      total_requests: this.totalRequests,
      active_inferences: this.inflight.size,
    };
  }

  private async inference(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = parseJson(await readBody(req, this.maxBody));
    const seedReq = readSeedRequest(body);
    await this.readInputs(seedReq);
    const engine = this.opts.engine;
    // the engine's own validation, once, before anything is queued
    try {
      engine.normalize({ ...seedReq.base, ...(seedReq.seed !== undefined ? { seed: seedReq.seed } : {}) });
    } catch (e) {
      if (e instanceof InvalidRequestError) throw rangeError(e, clientInput(body as Record<string, unknown>, e.field));
      throw e;
    }
    const id = `http-${randomBytes(6).toString('hex')}`;
    const controller = new AbortController();
    // a client that hangs up cancels its images at once
    const gone = () => !res.writableFinished && controller.abort(new ClientGone());
    res.once('close', gone);
    const onProgress = (event: ProgressEvent) => this.emit('progress', { id, event });
    const runs: Promise<GenerateResult>[] = [];
    for (let i = 0; i < seedReq.images; i++) {
      // each image its own request: its own seed (the client's plus i, or random) and scope
      const seed = seedReq.seed === undefined ? {} : { seed: (seedReq.seed + i) % 2 ** 32 };
      const run = engine.generate({ ...seedReq.base, ...seed, id: `${id}-${i}` }, { signal: controller.signal, onProgress });
      // one failing image stops its siblings: the response can only be whole
      run.catch(() => controller.abort(new CancelledError(id)));
      runs.push(run);
    }
    const settled = Promise.allSettled(runs);
    // stop() waits for the whole answer (PNGs saved, response written), not just the engine
    let answered!: () => void;
    this.inflight.set(id, { controller, settled: new Promise<void>((resolve) => (answered = resolve)) });
    this.emit('inference', { id, images: seedReq.images });
    let status: number | null = null;
    try {
      const outcomes = await settled;
      const reason = controller.signal.reason;
      if (reason instanceof ClientGone) throw reason;
      if (reason instanceof ShuttingDown) throw new HttpError(503, 'Server is shutting down: the request was cancelled');
      const failed = outcomes.find((o) => o.status === 'rejected' && !(o.reason instanceof CancelledError)) ?? outcomes.find((o) => o.status === 'rejected');
      if (failed) throw toHttp((failed as PromiseRejectedResult).reason, body as Record<string, unknown>);
      const base = baseUrl(req);
      const urls: string[] = [];
      for (const o of outcomes) urls.push(`${base}/images/${await this.save((o as PromiseFulfilledResult<GenerateResult>).value.png)}`);
      status = 200;
      json(res, 200, { response: urls });
    } catch (e) {
      status = e instanceof HttpError ? e.status : e instanceof ClientGone ? null : 500;
      throw e;
    } finally {
      res.off('close', gone);
      this.inflight.delete(id);
      answered();
      const reason = controller.signal.reason;
      const outcome = status === 200 ? 'done' : reason instanceof ClientGone ? 'client-gone' : reason instanceof ShuttingDown ? 'cancelled' : 'failed';
      this.emit('inference-end', { id, images: seedReq.images, outcome, status });
    }
  }

  /** Reads `image` and `mask_image` into the engine request's PNG bytes: sent as base64, or an image this server made (400 when neither). */
  private async readInputs(seedReq: SeedRequest): Promise<void> {
    for (const [field, value] of Object.entries(seedReq.inputs) as [ImageInputField, string][]) {
      const input = readImageInput(field, value);
      if ('bytes' in input) {
        seedReq.base[IMAGE_INPUTS[field]] = input.bytes;
        continue;
      }
      const bytes = await this.readMade(input.stored);
      const name = input.stored.length > 60 ? `a name of ${input.stored.length} characters` : JSON.stringify(input.stored);
      if (!bytes) throw inputError(field, IMAGE_INPUT_ALLOWED, `an image this server did not make (or no longer has): ${name}`, value);
      seedReq.base[IMAGE_INPUTS[field]] = bytes;
    }
  }

  /** One of this server's images, as the file it serves; null when it made none of that name (or the file is gone). */
  private async readMade(name: string): Promise<Uint8Array | null> {
    if (!this.isMade(name)) return null;
    return readFile(join(this.opts.imagesDir, name)).then(
      (b) => new Uint8Array(b.buffer, b.byteOffset, b.byteLength),
      () => null,
    );
  }

  /** A name of an image this server made: never a path, so traversal and foreign files are not found. */
  private isMade(name: string): boolean {
    return IMAGE_NAME.test(name) && this.made.has(name);
  }

  /** Writes a PNG (its settings chunks already inside) under a fresh random name. */
  private async save(png: Blob): Promise<string> {
    const bytes = new Uint8Array(await png.arrayBuffer());
    for (;;) {
      const name = `img${randomBytes(4).toString('hex')}.png`;
      try {
        await writeFile(join(this.opts.imagesDir, name), bytes, { flag: 'wx' });
        this.made.add(name);
        return name;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
    }
  }

  private async image(raw: string, res: ServerResponse): Promise<void> {
    let name: string;
    try {
      name = decodeURIComponent(raw);
    } catch {
      name = '';
    }
    // a name this server made, never a path: traversal and foreign files are simply not found
    const bytes = await this.readMade(name);
    if (!bytes) throw new HttpError(404, 'Image not found');
    res.writeHead(200, { 'Content-Type': 'image/png', 'Content-Length': bytes.length });
    res.end(bytes);
  }
}

/** Engine errors as the seed answers: 422 for a field out of range (named as sent), 400 for a size that never fits, 500 otherwise. */
function toHttp(e: unknown, body: Record<string, unknown>): HttpError {
  if (e instanceof InvalidRequestError) return rangeError(e, clientInput(body, e.field));
  if (e instanceof TooLargeError) return new HttpError(400, e.message);
  return new HttpError(500, `Error in processing: ${e instanceof EngineError || e instanceof Error ? e.message : String(e)}`);
}

/** The base URL the client reached us at: its Host header (never a bind address such as 0.0.0.0). */
function baseUrl(req: IncomingMessage): string {
  const host = req.headers.host;
  if (host && HOST.test(host)) return `http://${host}`;
  // HTTP/1.0 without Host: the address this connection came in on
  const addr = (req.socket.localAddress ?? '127.0.0.1').replace(/^::ffff:/, '');
  return `http://${addr.includes(':') ? `[${addr}]` : addr}:${req.socket.localPort}`;
}

function readBody(req: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const tooLarge = () => new HttpError(413, `Request body too large: at most ${limit} bytes`);
    if (Number(req.headers['content-length'] ?? 0) > limit) {
      req.resume(); // drain, so the 413 reaches the client
      return reject(tooLarge());
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        req.removeAllListeners('data');
        req.resume();
        reject(tooLarge());
      } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', () => reject(new ClientGone()));
    req.on('aborted', () => reject(new ClientGone()));
  });
}

/** FastAPI's answer to a body that is not JSON: 422 json_invalid. An empty body is a missing one. */
function parseJson(text: string): unknown {
  if (text.trim() === '') return undefined;
  try {
    return JSON.parse(text);
  } catch (e) {
    const pos = /position (\d+)/.exec((e as Error).message)?.[1];
    throw new HttpError(422, [{ type: 'json_invalid', loc: ['body', pos === undefined ? 0 : Number(pos)], msg: 'JSON decode error', input: {}, ctx: { error: (e as Error).message } }]);
  }
}

function json(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

/** As the seed's CORSMiddleware (any origin, credentials allowed): the origin is echoed when sent. */
function cors(req: IncomingMessage, res: ServerResponse): void {
  const origin = req.headers.origin;
  if (origin) {
    res.setHeader('Access-Control-Allow-Origin', origin);
    res.setHeader('Access-Control-Allow-Credentials', 'true');
    res.setHeader('Vary', 'Origin');
  } else res.setHeader('Access-Control-Allow-Origin', '*');
}

function preflight(req: IncomingMessage, res: ServerResponse): void {
  res.writeHead(200, {
    'Access-Control-Allow-Methods': 'DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT',
    'Access-Control-Allow-Headers': req.headers['access-control-request-headers'] ?? '*',
    'Access-Control-Max-Age': '600',
    'Content-Type': 'text/plain',
  });
  res.end('OK');
}
