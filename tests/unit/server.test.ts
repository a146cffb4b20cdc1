// npm run serve: the seed's HTTP API (diffusers' examples/server-async) over the
// engine, driven by real HTTP clients (fetch and node:http) against a real
// server on 127.0.0.1, with the tiny model; image to image and inpainting on the
// sd3 real-export fixture, against diffusers' own pipelines.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decode as decodePng } from 'fast-png';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Engine } from '../../workers/engine/engine.ts';
import { readPngSettings } from '../../workers/engine/png/settings-chunks.ts';
import { nodeRuntime } from '../../workers/engine/runtime/node-runtime.ts';
import { SeedServer, type InferenceEnd } from '../../server/seed-server.ts';
import { main } from '../../server/serve.ts';
import { createNodeEngine } from '../../workers/engine/node.ts';
import { diffToRgb, expectedImageRgb, imageInput, imageReference, REAL_EXPORTS_DIR, type ImageCase } from '../helpers/real-exports.ts';
import { maxPixelDiff, newTinyEngine, TINY_MODEL_DIR } from '../helpers/tiny-engine.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const INFERENCE = '/api/diffusers/inference';

/** A raw request with node:http: any path, any Host header, a body sent as is. */
function raw(port: number, method: string, path: string, body?: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string; headers: IncomingMessage['headers'] }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method, path, headers: { 'Content-Type': 'application/json', ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks).toString('utf8'), headers: res.headers }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** The inference-end event of one request id. */
function endOf(server: SeedServer, id: () => string | undefined): Promise<InferenceEnd> {
  return new Promise((resolve) => {
    const on = (e: InferenceEnd) => {
      if (e.id === id()) {
        server.off('inference-end', on);
        resolve(e);
      }
    };
    server.on('inference-end', on);
  });
}

/** Resolves with the id of the next inference once its first step has run. */
function firstStep(server: SeedServer): Promise<string> {
  return new Promise((resolve) => {
    const on = ({ id, event }: { id: string; event: { status: string } }) => {
      if (event.status === 'step') {
        server.off('progress', on);
        resolve(id);
      }
    };
    server.on('progress', on);
  });
}

describe('npm run serve: the seed’s API', () => {
  let engine: Engine;
  let server: SeedServer;
  let dir: string;
  let port: number;
  let base: string;
  const post = (body: unknown) => fetch(`${base}${INFERENCE}`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sd3-serve-'));
    engine = await newTinyEngine({ maxActive: 16 });
    server = new SeedServer({ engine, modelName: TINY_MODEL_DIR, imagesDir: join(dir, 'images') });
    port = (await server.listen(0, '127.0.0.1')).port;
    base = `http://127.0.0.1:${port}`;
  });
  afterAll(async () => {
    await server.stop(0);
    await engine.unload();
    await rm(dir, { recursive: true, force: true });
  });

  it('answers the seed’s test.py: welcome, one image at an absolute URL, a PNG with its settings', async () => {
    const root = await fetch(`${base}/`);
    expect(root.status).toBe(200);
    expect(await root.json()).toEqual({ message: 'Welcome to the Diffusers Server' });
    // test.py's payload, plus the seed's nullable fields and a field it does not know
    const r = await post({ prompt: 'The T-800 Terminator Robot Returning From The Future, Anime Style', num_inference_steps: 30, num_images_per_prompt: 1, model: null, negative_prompt: null, style: 'ignored' });
    expect(r.status).toBe(200);
    const { response } = (await r.json()) as { response: string[] };
    expect(response).toHaveLength(1);
    expect(response[0]).toMatch(new RegExp(`^http://127\\.0\\.0\\.1:${port}/images/img[0-9a-f]{8}\\.png$`));
    const img = await fetch(response[0]); // test.py: absolute URLs as they are
    expect(img.status).toBe(200);
    expect(img.headers.get('content-type')).toBe('image/png');
    const bytes = new Uint8Array(await img.arrayBuffer());
    expect(decodePng(bytes)).toMatchObject({ width: 64, height: 64 });
    const { source, settings } = readPngSettings(bytes);
    expect(source).toBe('sd3-webgpu');
    expect(settings).toMatchObject({ prompt: 'The T-800 Terminator Robot Returning From The Future, Anime Style', steps: 30, guidance: 4.5, width: 64, height: 64, model: 'tiny-sd3' });
    // CORS from any origin, as the seed's middleware
    const cors = await fetch(`${base}/api/status`, { headers: { Origin: 'http://elsewhere.example' } });
    expect(cors.headers.get('access-control-allow-origin')).toBe('http://elsewhere.example');
  });

  it('builds image URLs from the request’s Host, not the bind address', async () => {
    const r = await raw(port, 'POST', INFERENCE, JSON.stringify({ prompt: 'hosted', num_inference_steps: 1 }), { Host: 'sd3.example:9000' });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body).response[0]).toMatch(/^http:\/\/sd3\.example:9000\/images\/img[0-9a-f]{8}\.png$/);
  });

  it('serves 8 parallel requests of 2 images each through one interleaver: 16 distinct PNGs, each with its own seed', async () => {
    const before = engine.status();
    const replies = await Promise.all(Array.from({ length: 8 }, (_, i) => post({ prompt: `parallel ${i}`, num_inference_steps: 3, num_images_per_prompt: 2 })));
    expect(replies.map((r) => r.status)).toEqual(Array(8).fill(200));
    const urls = (await Promise.all(replies.map(async (r) => ((await r.json()) as { response: string[] }).response))).flat();
    expect(new Set(urls).size).toBe(16);
    const pngs = await Promise.all(urls.map(async (u) => new Uint8Array(await (await fetch(u)).arrayBuffer())));
    expect(new Set(pngs.map((b) => createHash('sha256').update(b).digest('hex'))).size).toBe(16);
    const settings = pngs.map((b) => readPngSettings(b).settings);
    expect(new Set(settings.map((s) => s.seed)).size).toBe(16);
    expect(settings.filter((s) => s.prompt === 'parallel 5')).toHaveLength(2);
    const after = engine.status();
    expect(after.requestsServed - before.requestsServed).toBe(16);
    // rows of different requests shared transformer runs (2 rows: one guided request alone)
    expect(after.maxRowsPerRun).toBeGreaterThan(2);
  });

  it('takes our extra fields: a chosen seed gives image i seed + i, the engine’s own image for it', async () => {
    const r = await post({ prompt: 'seeded', num_inference_steps: 2, num_images_per_prompt: 2, seed: 7, guidance_scale: 3, width: 96, height: 48 });
    expect(r.status).toBe(200);
    const { response } = (await r.json()) as { response: string[] };
    const pngs = await Promise.all(response.map(async (u) => new Uint8Array(await (await fetch(u)).arrayBuffer())));
    expect(pngs.map((b) => readPngSettings(b).settings)).toMatchObject([
      { seed: 7, guidance: 3, width: 96, height: 48, steps: 2 },
      { seed: 8, guidance: 3, width: 96, height: 48, steps: 2 },
    ]);
    const direct = await engine.generate({ prompt: 'seeded', seed: 8, steps: 2, guidance: 3, width: 96, height: 48 });
    expect(maxPixelDiff(Uint8ClampedArray.from(decodePng(pngs[1]).data), direct.rgba)).toBe(0);
  });

  it('reports the seed’s status fields and ours', async () => {
    const s = engine.status();
    const r = await fetch(`${base}/api/status`);
    expect(r.status).toBe(200);
    const status = await r.json();
    expect(status).toMatchObject({
      current_model: TINY_MODEL_DIR,
      type_models: 't2im',
      memory: { weights_bytes: s.weightBytes, requests_bytes: 0, budget_bytes: s.memory!.budgetBytes, request_budget_bytes: s.requestBudgetBytes, device: s.runtime!.device },
      // native CPU on every core, said with why no GPU provider was used
      backend: 'cpu',
      runtime: { name: 'onnxruntime-node', backend: 'cpu', threads: availableParallelism(), device: expect.stringMatching(/^CPU: /), unavailable: s.runtime!.unavailable },
      model: { id: 'tiny-sd3', defaults: { steps: 4, width: 64, height: 64 } },
      active: 0,
      queued: 0,
      served: s.requestsServed,
      cancelled: s.requestsCancelled,
      active_inferences: 0,
    });
    expect(status.memory.memory_allocated_gb).toBe(Math.round((s.weightBytes / 1024 ** 3) * 100) / 100);
    // idle: nothing admitted, so the runtime reserves what the weights take (reserved >= allocated, as in PyTorch)
    expect(status.memory.memory_reserved_gb).toBe(status.memory.memory_allocated_gb);
    expect(status.total_requests).toBe(server.totalRequests);
  });

  it('refuses bad requests with the seed’s codes and FastAPI’s shapes, queueing nothing', async () => {
    const before = engine.status();
    const blank = await post({ prompt: '   ' });
    expect([blank.status, await blank.json()]).toEqual([400, { detail: 'No prompt provided' }]);
    const missing = await post({ num_inference_steps: 2 });
    expect(missing.status).toBe(422);
    expect((await missing.json()).detail).toMatchObject([{ type: 'missing', loc: ['body', 'prompt'], msg: 'Field required' }]);
    const wrong = await post({ prompt: 5, num_inference_steps: 'many' });
    expect(wrong.status).toBe(422);
    expect((await wrong.json()).detail).toMatchObject([
      { type: 'string_type', loc: ['body', 'prompt'], input: 5 },
      { type: 'int_parsing', loc: ['body', 'num_inference_steps'], input: 'many' },
    ]);
    const badJson = await raw(port, 'POST', INFERENCE, '{"prompt": "a cat",');
    expect(badJson.status).toBe(422);
    expect(JSON.parse(badJson.body).detail).toMatchObject([{ type: 'json_invalid', msg: 'JSON decode error' }]);
    const empty = await raw(port, 'POST', INFERENCE, '');
    expect([empty.status, JSON.parse(empty.body).detail[0].loc]).toEqual([422, ['body']]);
    // the default limit leaves room for init images as base64 (32 MiB)
    const tooBig = await raw(port, 'POST', INFERENCE, JSON.stringify({ prompt: 'x'.repeat(33 * 1024 * 1024) }));
    expect([tooBig.status, JSON.parse(tooBig.body).detail]).toEqual([413, 'Request body too large: at most 33554432 bytes']);
    expect((await fetch(`${base}/nowhere`)).status).toBe(404);
    expect((await fetch(`${base}${INFERENCE}`)).status).toBe(405);
    const after = engine.status();
    expect([after.requestsServed, after.requestsFailed, after.requestsCancelled]).toEqual([before.requestsServed, before.requestsFailed, before.requestsCancelled]);
  });

  it('names an out-of-range field as the client sent it, with its allowed range', async () => {
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [{ guidance_scale: 1000 }, 'guidance_scale', /^guidance_scale: expected a finite number in 0\.\.100, got 1000$/],
      [{ num_inference_steps: 501 }, 'num_inference_steps', /^num_inference_steps: expected an integer in 1\.\.500, got 501$/],
      [{ width: 33 }, 'width', /^width: expected an integer in 16\.\.512, a multiple of 16, got 33$/],
      [{ seed: -1 }, 'seed', /^seed: expected an integer in 0\.\.4294967295, got -1$/],
      [{ num_images_per_prompt: 0 }, 'num_images_per_prompt', /^num_images_per_prompt: expected an integer in 1\.\.32, got 0$/],
    ];
    for (const [extra, field, msg] of cases) {
      const r = await post({ prompt: 'out of range', ...extra });
      expect(r.status).toBe(422);
      const [issue] = (await r.json()).detail;
      expect(issue.loc).toEqual(['body', field]);
      expect(issue.msg).toMatch(msg);
    }
  });

  it('serves only images it made: a missing name, a traversal and a foreign file are all 404', async () => {
    await writeFile(join(dir, 'images', 'img00000000.png'), 'not made here');
    for (const path of ['/images/imgdeadbeef.png', '/images/img00000000.png', '/images/..%2F..%2F..%2Fetc%2Fpasswd', '/images/../../package.json', '/images/%2e%2e%2fserver.test.ts', '/images/%E0%A4%A']) {
      const r = await raw(port, 'GET', path);
      expect([path, r.status]).toEqual([path, 404]);
      expect(JSON.parse(r.body)).toEqual({ detail: 'Image not found' });
    }
  });

  it('cancels a request whose client disconnects: its images are dropped from the engine', async () => {
    const before = engine.status();
    const started = firstStep(server);
    const req = httpRequest({ host: '127.0.0.1', port, method: 'POST', path: INFERENCE, headers: { 'Content-Type': 'application/json' } });
    req.on('error', () => undefined); // we hang up ourselves
    req.end(JSON.stringify({ prompt: 'a long one', num_inference_steps: 500, num_images_per_prompt: 2 }));
    const id = await started;
    const ended = endOf(server, () => id);
    const during = (await (await fetch(`${base}/api/status`)).json()) as { active: number; queued: number; active_inferences: number };
    expect(during.active + during.queued).toBe(2);
    expect(during.active_inferences).toBe(1);
    req.destroy();
    expect(await ended).toMatchObject({ id, outcome: 'client-gone', status: null });
    const after = engine.status();
    expect(after.requestsCancelled - before.requestsCancelled).toBe(2);
    expect([after.requestsActive, after.requestsQueued, after.requestBytes, after.requestsServed]).toEqual([0, 0, 0, before.requestsServed]);
  });

  it('stops gracefully: running work finishes, new connections are refused; past the grace it is cancelled with 503', async () => {
    const stopping = new SeedServer({ engine, modelName: 'tiny', imagesDir: join(dir, 'images') });
    const p = (await stopping.listen(0, '127.0.0.1')).port;
    const started = firstStep(stopping);
    const running = fetch(`http://127.0.0.1:${p}${INFERENCE}`, { method: 'POST', body: JSON.stringify({ prompt: 'finish me', num_inference_steps: 40 }) });
    await started;
    const stopped = once(stopping, 'stopped');
    const done = stopping.stop(60_000);
    const reply = await running;
    expect(reply.status).toBe(200);
    expect((await reply.json()).response).toHaveLength(1);
    await done;
    await stopped;
    await expect(fetch(`http://127.0.0.1:${p}/`)).rejects.toThrow();

    const cut = new SeedServer({ engine, modelName: 'tiny', imagesDir: join(dir, 'images') });
    const q = (await cut.listen(0, '127.0.0.1')).port;
    const before = engine.status().requestsCancelled;
    const began = firstStep(cut);
    const late = fetch(`http://127.0.0.1:${q}${INFERENCE}`, { method: 'POST', body: JSON.stringify({ prompt: 'cancel me', num_inference_steps: 500 }) });
    await began;
    await cut.stop(0);
    const r = await late;
    expect([r.status, await r.json()]).toEqual([503, { detail: 'Server is shutting down: the request was cancelled' }]);
    expect(engine.status().requestsCancelled - before).toBe(1);
    expect(engine.status().model).not.toBeNull(); // not its engine: left loaded
  });

  it("auto takes native onnxruntime: a GPU provider where one runs, else the CPU on every core, saying why each GPU provider was not used", async () => {
    const auto = await nodeRuntime('auto');
    expect(auto.status.runtime).toBe('onnxruntime-node');
    if (auto.backend === 'cpu') {
      // this machine: no CUDA provider installed, and onnxruntime's Dawn finds no adapter
      expect(auto.status.unavailable.map((u) => u.backend)).toEqual(process.platform === 'linux' ? ['cuda', 'webgpu'] : expect.any(Array));
      for (const u of auto.status.unavailable) expect(u.reason).toMatch(/not installed|did not start|has no/);
      expect(auto.status.threads).toBe((await import('node:os')).availableParallelism());
    } else expect(auto.status.unavailable.length).toBeLessThan(3);
    const wasm = await nodeRuntime('wasm', { threads: 1 });
    expect([wasm.backend, wasm.status.runtime, wasm.status.threads]).toEqual(['wasm', 'onnxruntime-web', 1]);
    const cpu = await nodeRuntime('cpu', { threads: 1 });
    expect([cpu.backend, cpu.status.threads, cpu.native?.sessionOptions.intraOpNumThreads]).toEqual(['cpu', 1, 1]);
  });
});

/** diffusers' StableDiffusion3Img2ImgPipeline / InpaintPipeline runs on the sd3 real-export fixture. */
const imageRef = imageReference('sd3');
const imageCase = (name: string) => imageRef.cases.find((c) => c.name === name)!;
const inputPng = imageInput;
const expectedRgb = (c: ImageCase) => expectedImageRgb('sd3', c);
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64');

describe('npm run serve: image to image and inpainting in diffusers’ argument names', () => {
  let engine: Engine;
  let server: SeedServer;
  let dir: string;
  let port: number;
  let base: string;
  const post = (body: unknown) => fetch(`${base}${INFERENCE}`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  /** diffusers' settings for every case, as a client sends them. */
  const settings = { prompt: imageRef.prompt, negative_prompt: imageRef.negativePrompt, seed: imageRef.seed, num_inference_steps: imageRef.steps, guidance_scale: imageRef.guidance, width: imageRef.width, height: imageRef.height };
  /** Posts a request that should succeed; its one image's URL and PNG bytes. */
  const generate = async (body: Record<string, unknown>) => {
    const r = await post(body);
    const answer = await r.json();
    expect([r.status, answer]).toEqual([200, { response: [expect.stringMatching(/\/images\/img[0-9a-f]{8}\.png$/)] }]);
    const url = (answer as { response: string[] }).response[0];
    return { url, png: new Uint8Array(await (await fetch(url)).arrayBuffer()) };
  };
  /** The first image made in this block, by the img2img test: the later tests send it back. */
  let first: { url: string; png: Uint8Array };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sd3-serve-img-'));
    // native CPU, as diffusers' references are held to (tests/unit/image-to-image.test.ts)
    engine = createNodeEngine();
    await engine.load({ kind: 'path', path: join(REAL_EXPORTS_DIR, 'sd3') });
    server = new SeedServer({ engine, modelName: 'sd3', imagesDir: join(dir, 'images') });
    port = (await server.listen(0, '127.0.0.1')).port;
    base = `http://127.0.0.1:${port}`;
  });
  afterAll(async () => {
    await server.stop(0);
    await engine.unload();
    await rm(dir, { recursive: true, force: true });
  });

  it('img2img: image as plain base64 and strength give diffusers’ image within 2 levels, strength and the input’s hash recorded', async () => {
    const c = imageCase('img2img-s0.3');
    first = await generate({ ...settings, image: b64(inputPng(c.image)), strength: c.strength });
    const png = decodePng(first.png);
    expect([png.width, png.height]).toEqual(c.outputSize);
    expect(diffToRgb(png.data, expectedRgb(c), png.channels)).toBeLessThanOrEqual(2);
    const { settings: read, json } = readPngSettings(first.png);
    expect(read.strength).toBe(c.strength);
    expect(json).toMatchObject({ image: { sha256: sha256(inputPng(c.image)), width: 64, height: 64 } });
    expect(json!.mask).toBeUndefined();
  });

  it('inpaint: image and mask_image as data URLs, padding_mask_crop, within 2 levels of diffusers’ at the whole image’s size', async () => {
    const c = imageCase('inpaint-crop-s0.6');
    const dataUrl = (name: string) => `data:image/png;base64,${b64(inputPng(name))}`;
    const { png: bytes } = await generate({ ...settings, image: dataUrl(c.image), mask_image: dataUrl(c.mask!), strength: c.strength, padding_mask_crop: c.paddingMaskCrop });
    const png = decodePng(bytes);
    expect([png.width, png.height]).toEqual(c.outputSize); // 96x72: the crop's 64x64 pasted back
    expect(diffToRgb(png.data, expectedRgb(c), png.channels)).toBeLessThanOrEqual(2);
    const { settings: read, json } = readPngSettings(bytes);
    expect(read.strength).toBe(c.strength);
    expect(json).toMatchObject({ paddingMaskCrop: c.paddingMaskCrop, image: { sha256: sha256(inputPng(c.image)) }, mask: { sha256: sha256(inputPng(c.mask!)), width: 96, height: 72 } });
  });

  it('takes an image it made as `image`: the URL it answered with, or its /images/ path; the stored PNG is what runs', async () => {
    // the whole URL, as the first inference answered it
    const again = await generate({ ...settings, seed: 5, image: first.url, strength: 0.5 });
    expect(readPngSettings(again.png).json).toMatchObject({ strength: 0.5, image: { sha256: sha256(first.png), width: 64, height: 64 } });
    // the very image the engine makes from those bytes
    const direct = await engine.generate({ prompt: imageRef.prompt, negativePrompt: imageRef.negativePrompt, seed: 5, steps: imageRef.steps, guidance: imageRef.guidance, width: 64, height: 64, image: first.png, strength: 0.5 });
    expect(maxPixelDiff(Uint8ClampedArray.from(decodePng(again.png).data), direct.rgba)).toBe(0);
    // the path, with a mask sent as base64: inpainting the stored image
    const path = new URL(first.url).pathname;
    const inpainted = await generate({ ...settings, image: path, mask_image: b64(inputPng('mask-64.png')), strength: 0.6 });
    expect(readPngSettings(inpainted.png).json).toMatchObject({ image: { sha256: sha256(first.png) }, mask: { sha256: sha256(inputPng('mask-64.png')) } });
  });

  it('refuses an image it cannot use with 400 and a strength or padding out of range with 422 (as the seed\'s own ranges), naming diffusers’ field, queueing nothing', async () => {
    const before = engine.status();
    const init = b64(inputPng('init-64.png'));
    await writeFile(join(dir, 'images', 'img00000000.png'), inputPng('init-64.png')); // a PNG there, not made by the server
    const cases: [string, Record<string, unknown>, string, RegExp][] = [
      ['not base64', { image: 'iVBORw0KGgo!!not*base64' }, 'image', /^image: expected a PNG file as base64 .*, got a string that is not base64$/],
      ['base64 of a file that is not a PNG', { image: b64(new TextEncoder().encode('GIF89a: not a PNG at all')) }, 'image', /^image: expected a PNG file .*, got "24 bytes that are not a PNG file"$/],
      ['a truncated PNG', { image: b64(inputPng('init-64.png').subarray(0, 200)) }, 'image', /^image: .*PNG/],
      ['a data URL that is not base64', { image: 'data:image/png,rawbytes' }, 'image', /got a data URL that is not base64$/],
      ['an unknown /images/ name', { image: '/images/imgdeadbeef.png' }, 'image', /got an image this server did not make \(or no longer has\): "imgdeadbeef\.png"$/],
      ['a file in the images folder it did not make', { image: `${base}/images/img00000000.png` }, 'image', /did not make .*"img00000000\.png"$/],
      ['a traversal', { image: '/images/..%2F..%2Fpackage.json' }, 'image', /did not make/],
      ['a URL elsewhere', { image: 'https://elsewhere.example/cat.png' }, 'image', /got a URL that is not one of this server's images \(it fetches no other\)$/],
      ['a mask of another size', { image: init, mask_image: b64(inputPng('mask-96x72.png')) }, 'mask_image', /^mask_image: expected a PNG the image's size, 64x64, got "a 96x72 PNG"$/],
      ['a mask that is not base64', { image: init, mask_image: '%%%' }, 'mask_image', /^mask_image: expected a PNG file as base64/],
      ['an unknown mask', { image: init, mask_image: '/images/imgdeadbeef.png' }, 'mask_image', /did not make/],
      ['a mask without an image', { mask_image: b64(inputPng('mask-64.png')) }, 'mask_image', /^mask_image: expected only with an image/],
      ['strength 1.5', { image: init, strength: 1.5 }, 'strength', /^strength: expected a number in \(0, 1\] .*, got 1\.5$/],
      ['strength 0', { image: init, strength: 0 }, 'strength', /^strength: expected a number in \(0, 1\] .*, got 0$/],
      ['strength without an image', { strength: 0.5 }, 'strength', /^strength: expected only with an image/],
      ['padding_mask_crop without a mask', { image: init, padding_mask_crop: 8 }, 'padding_mask_crop', /^padding_mask_crop: expected only with a mask/],
      ['padding_mask_crop out of range', { image: init, mask_image: b64(inputPng('mask-64.png')), padding_mask_crop: -1 }, 'padding_mask_crop', /^padding_mask_crop: expected an integer in 0\.\.8192, got -1$/],
    ];
    for (const [what, fields, field, msg] of cases) {
      const r = await post({ ...settings, num_images_per_prompt: 2, ...fields });
      const { detail } = (await r.json()) as { detail: { loc: string[]; msg: string; input: unknown }[] };
      expect([what, r.status, detail[0].loc]).toEqual([what, field === 'image' || field === 'mask_image' ? 400 : 422, ['body', field]]);
      expect(detail[0].msg, what).toMatch(msg);
      // the base64 is not echoed back whole
      expect(JSON.stringify(detail).length, what).toBeLessThan(2000);
    }
    // a field of the wrong type is pydantic's 422, as for the seed's own fields
    const typed = await post({ ...settings, image: 5, strength: 'lots', padding_mask_crop: 1.5 });
    expect(typed.status).toBe(422);
    expect((await typed.json()).detail).toMatchObject([
      { type: 'string_type', loc: ['body', 'image'] },
      { type: 'float_parsing', loc: ['body', 'strength'] },
      { type: 'int_from_float', loc: ['body', 'padding_mask_crop'] },
    ]);
    const after = engine.status();
    expect([after.requestsServed, after.requestsFailed, after.requestsCancelled, after.requestsQueued, after.requestsActive]).toEqual([before.requestsServed, before.requestsFailed, before.requestsCancelled, 0, 0]);
  });
});

describe('npm run serve: the command', () => {
  it('refuses bad flags with exit code 2 before loading anything', async () => {
    expect(await main(['--backend', 'tpu'])).toBe(2);
    expect(await main(['--threads', '0'])).toBe(2);
    expect(await main(['--port', '70000'])).toBe(2);
    expect(await main(['--grace', 'soon'])).toBe(2);
    expect(await main(['--bogus'])).toBe(2);
  });

  it('loads before it listens, serves, and on SIGTERM finishes the running request and exits 0', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sd3-serve-cmd-'));
    const child = spawn(process.execPath, ['--import', 'tsx', 'server/serve.ts', '--model', TINY_MODEL_DIR, '--port', '0', '--images-dir', dir], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      let stderr = '';
      const lines: ((line: string) => void)[] = [];
      child.stderr.on('data', (c: Buffer) => {
        stderr += c;
        for (const l of lines) l(stderr);
      });
      const waitFor = (re: RegExp) => new Promise<RegExpMatchArray>((resolve) => {
        const check = (s: string) => {
          const m = s.match(re);
          if (m) resolve(m);
        };
        lines.push(check);
        check(stderr);
      });
      // the first line on stdout, or the reason it never came
      const first = await Promise.race([once(child.stdout, 'data'), once(child, 'exit').then(() => Promise.reject(new Error(`serve exited early:\n${stderr}`)))]);
      const [, url] = String(first).match(/listening on (http:\/\/127\.0\.0\.1:\d+)/)!;
      // the backend is said before the model loads, with why no faster one was used
      expect(stderr).toMatch(/^backend cpu \(onnxruntime-node, \d+ threads?; CPU: .*\); not used: cuda: .*; webgpu: .*$/m);
      expect(stderr).toMatch(/model tiny-sd3 .* on cpu/);
      expect(await (await fetch(`${url}/`)).json()).toEqual({ message: 'Welcome to the Diffusers Server' });
      const reply = fetch(`${url}${INFERENCE}`, { method: 'POST', body: JSON.stringify({ prompt: 'until the end', num_inference_steps: 60 }) });
      await waitFor(/http-[0-9a-f]+: 1 image\(s\) queued/);
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      const r = await reply;
      expect(r.status).toBe(200);
      const [image] = ((await r.json()) as { response: string[] }).response;
      expect(image).toMatch(/\/images\/img[0-9a-f]{8}\.png$/);
      expect(await exited).toEqual([0, null]);
      expect(stderr).toMatch(/SIGTERM: no new requests; 1 running/);
      expect(stderr).toMatch(/stopped\n$/);
    } finally {
      child.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    }
  });
});
