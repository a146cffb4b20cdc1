// The exports made by real tools (tools/fixtures/make_real_exports.py), as the
// Node and browser tests use them: diffusers' reference runs, the published
// layouts assembled from their file maps, and all of them served by the local
// Hub-layout server as gated repos.
import { existsSync, readFileSync } from 'node:fs';
import { cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startModelServer, type ModelServer } from './model-server.ts';

export const REAL_EXPORTS_DIR = fileURLToPath(new URL('../fixtures/real-exports/', import.meta.url));

/** diffusers' own run on a fixture's weights: the settings, and one RGB file per guidance. */
export interface Reference {
  prompt: string;
  negativePrompt: string;
  seed: number;
  width: number;
  height: number;
  steps: number;
  runs: { guidance: number; rgb: string }[];
}

export const reference = (name: string): Reference => JSON.parse(readFileSync(join(REAL_EXPORTS_DIR, 'reference', name, 'reference.json'), 'utf8'));

/** diffusers' pixels for one run, RGB. */
export const referenceRgb = (name: string, run: Reference['runs'][number]): Uint8Array => readFileSync(join(REAL_EXPORTS_DIR, 'reference', name, run.rgb));

/** Largest difference, in levels of 255, between an RGBA image (`channels` 4, or 3 for RGB) and diffusers' RGB. */
export function diffToRgb(pixels: ArrayLike<number>, rgb: Uint8Array, channels = 4): number {
  let d = 0;
  for (let i = 0; i < rgb.length / 3; i++) for (let c = 0; c < 3; c++) d = Math.max(d, Math.abs(pixels[i * channels + c] - rgb[i * 3 + c]));
  return d;
}

/** The published layouts (Amuse, AMD, TensorStack's names) as file maps: path in the layout -> fixture file ("" = an empty file). */
export const realLayouts: Record<string, Record<string, string>> = existsSync(join(REAL_EXPORTS_DIR, 'layouts.json')) ? JSON.parse(readFileSync(join(REAL_EXPORTS_DIR, 'layouts.json'), 'utf8')) : {};

/** Lays a layout out in `dir` from its file map. */
export async function assembleLayout(name: string, dir: string): Promise<string> {
  for (const [path, from] of Object.entries(realLayouts[name])) {
    await mkdir(dirname(join(dir, path)), { recursive: true });
    if (from) await cp(join(REAL_EXPORTS_DIR, from), join(dir, path));
    else await writeFile(join(dir, path), ''); // AMD's 0-byte config.json
  }
  return dir;
}

/** A fixture served as a Hub repo: an Optimum folder as exported, or a published layout assembled. */
export interface RealRepo {
  repo: string;
  /** An Optimum-layout fixture folder, or a layout from layouts.json. */
  source: { fixture: string } | { layout: string };
  /** The diffusers reference it is compared with. */
  reference: 'sd3' | 'sd35';
  /** Levels of 255: 2 for fp32 exports; fp16 inside is the same picture, not the same bits. */
  tolerance: number;
}

export const REAL_REPOS: RealRepo[] = [
  { repo: 'stabilityai/tiny-sd3-onnx', source: { fixture: 'sd3' }, reference: 'sd3', tolerance: 2 },
  { repo: 'stabilityai/tiny-sd3-onnx-directml', source: { fixture: 'sd3-fused' }, reference: 'sd3', tolerance: 2 },
  { repo: 'TensorStack/tiny-sd3.5-amuse', source: { layout: 'amuse' }, reference: 'sd35', tolerance: 2 },
  { repo: 'stabilityai/tiny-sd3.5_amdgpu', source: { layout: 'amd' }, reference: 'sd35', tolerance: 12 },
  { repo: 'TensorStack/tiny-sd3-onnx', source: { layout: 'tensorstack-names' }, reference: 'sd3', tolerance: 2 },
];

/** Every fixture in REAL_REPOS (and `extra` Optimum folders by repo name) served by one Hub-layout server, each gated behind `token`. */
export async function serveRealRepos(token: string, extra: { repo: string; fixture: string }[] = []): Promise<{ server: ModelServer; close(): Promise<void> }> {
  const root = await mkdtemp(join(tmpdir(), 'sd3-real-repos-'));
  const repos = [];
  for (const r of REAL_REPOS) {
    const folder = 'fixture' in r.source ? join(REAL_EXPORTS_DIR, r.source.fixture) : await assembleLayout(r.source.layout, join(root, r.source.layout));
    repos.push({ repo: r.repo, folder, gatedToken: token });
  }
  for (const e of extra) repos.push({ repo: e.repo, folder: join(REAL_EXPORTS_DIR, e.fixture), gatedToken: token });
  const server = await startModelServer({ repos });
  return {
    server,
    close: async () => {
      await server.close();
      await rm(root, { recursive: true, force: true });
    },
  };
}

/** One run of diffusers' StableDiffusion3Img2ImgPipeline or InpaintPipeline on a fixture (reference/<ref>/img2img/). */
export interface ImageCase {
  name: string;
  kind: 'img2img' | 'inpaint';
  strength: number;
  image: string;
  mask?: string;
  paddingMaskCrop?: number;
  encoded: string;
  outputSize: [number, number];
  stepsRun: number;
  tStart: number;
  firstSigma: number;
  files: Record<'firstNoisedLatents' | 'finalLatents' | 'rgb' | 'timesteps', { file: string }> & { rgbShiftDecode?: { file: string }; maskLatents?: { file: string } };
}

/** The settings every case ran with, the encoder's outputs per input, and the cases. */
export interface ImageReference {
  prompt: string;
  negativePrompt: string;
  seed: number;
  guidance: number;
  steps: number;
  width: number;
  height: number;
  encoded: Record<string, { initLatents: { file: string }; latentParameters: { file: string } }>;
  cases: ImageCase[];
}

export const imageReferenceDir = (ref: string) => join(REAL_EXPORTS_DIR, 'reference', ref, 'img2img');
export const imageReference = (ref: string): ImageReference => JSON.parse(readFileSync(join(imageReferenceDir(ref), 'reference.json'), 'utf8'));
/** An input PNG of the cases (reference/inputs/), as bytes. */
export const imageInput = (name: string) => new Uint8Array(readFileSync(join(REAL_EXPORTS_DIR, 'reference', 'inputs', name)));

/**
 * diffusers' pixels to hold a case to. Its inpaint pipeline decodes without the VAE's shift factor
 * (diffusers #13611), unlike every other SD3 pipeline; the engine decodes with it, so inpainting is
 * held to the same final latents decoded with the shift.
 */
export const expectedImageRgb = (ref: string, c: ImageCase) => readFileSync(join(imageReferenceDir(ref), (c.files.rgbShiftDecode ?? c.files.rgb).file));
