// Request validation: every field checked against the loaded model's limits,
// with errors that name the field and the allowed range.
import { InvalidRequestError } from '../errors.ts';
import type { GenerateRequest, ModelInfo, NormalizedRequest, RequestSettings } from './types.ts';

export const LIMITS = {
  steps: { min: 1, max: 500 },
  guidance: { min: 0, max: 100 },
  seed: { min: 0, max: 0xffffffff },
  promptChars: 20_000,
  idChars: 128,
  /** Image requests: strength in (0, 1], diffusers' default; an input image's side; the crop's padding. */
  strength: { min: 0, max: 1, default: 0.6 },
  imageSide: { min: 1, max: 8192 },
  paddingMaskCrop: { min: 0, max: 8192 },
} as const;

const KNOWN_FIELDS = new Set(['id', 'prompt', 'negativePrompt', 'seed', 'steps', 'guidance', 'width', 'height', 'image', 'mask', 'strength', 'paddingMaskCrop']);

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** A PNG file's size from its header (IHDR), checked cheaply here; its pixels are decoded when the request runs. */
export function pngSize(field: string, v: unknown): { width: number; height: number } {
  const what = `a PNG file of at most ${LIMITS.imageSide.max}x${LIMITS.imageSide.max} pixels`;
  if (!(v instanceof Uint8Array)) throw new InvalidRequestError(field, what, v);
  const ihdr = v.length >= 24 && PNG_SIGNATURE.every((b, i) => v[i] === b) && String.fromCharCode(...v.subarray(12, 16)) === 'IHDR';
  if (!ihdr) throw new InvalidRequestError(field, what, `${v.length} bytes that are not a PNG file`);
  const view = new DataView(v.buffer, v.byteOffset, v.byteLength);
  const width = view.getUint32(16);
  const height = view.getUint32(20);
  if (width < LIMITS.imageSide.min || height < LIMITS.imageSide.min || width > LIMITS.imageSide.max || height > LIMITS.imageSide.max) {
    throw new InvalidRequestError(field, what, `a ${width}x${height} PNG`);
  }
  return { width, height };
}

/** The request's size when it leaves it to an input image: the image's, scaled down to the model's largest side, rounded down to its multiple. */
export function sizeFromImage(image: { width: number; height: number }, limits: ModelInfo['limits']): { width: number; height: number } {
  const { minSize, maxSize, sizeMultiple } = limits;
  const scale = Math.min(1, maxSize / Math.max(image.width, image.height));
  const snap = (v: number) => Math.max(minSize, Math.floor((v * scale) / sizeMultiple) * sizeMultiple);
  return { width: snap(image.width), height: snap(image.height) };
}

export type { NormalizedRequest } from './types.ts';

function integerIn(field: string, v: unknown, min: number, max: number, extra?: (n: number) => boolean, extraText = ''): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max || (extra && !extra(v))) {
    throw new InvalidRequestError(field, `an integer in ${min}..${max}${extraText}`, v);
  }
  return v + 0; // -0 becomes 0
}

function text(field: string, v: unknown, allowEmpty: boolean): string {
  if (typeof v !== 'string') throw new InvalidRequestError(field, `a string of ${allowEmpty ? 0 : 1}..${LIMITS.promptChars} characters`, v);
  if ((!allowEmpty && v.trim().length === 0) || v.length > LIMITS.promptChars) {
    throw new InvalidRequestError(field, `a ${allowEmpty ? '' : 'non-empty '}string of at most ${LIMITS.promptChars} characters`, v);
  }
  return v;
}

/** Fields a model fills in when a request leaves them out: they follow the model that runs the request. */
export const MODEL_DEFAULTED = ['steps', 'guidance', 'width', 'height'] as const;

/** Checks a request and fills defaults from the model; throws InvalidRequestError naming the first bad field. */
export function normalizeRequest(raw: unknown, model: ModelInfo, newId: () => string, randomSeed: () => number): NormalizedRequest {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new InvalidRequestError('request', 'an object with at least a prompt', raw);
  const req = raw as Record<string, unknown> & Partial<GenerateRequest>;
  for (const key of Object.keys(req)) {
    if (!KNOWN_FIELDS.has(key)) throw new InvalidRequestError(key, `no such field (known: ${[...KNOWN_FIELDS].join(', ')})`, req[key]);
  }
  const { minSize, maxSize, sizeMultiple } = model.limits;
  const images = imageFields(req, model);
  // an image request without a size takes its image's
  const fallback = images.image ? sizeFromImage(pngSize('image', images.image), model.limits) : model.defaults;
  const size = (field: 'width' | 'height') =>
    req[field] === undefined ? fallback[field] : integerIn(field, req[field], minSize, maxSize, (n) => n % sizeMultiple === 0, `, a multiple of ${sizeMultiple}`);
  let id: string;
  if (req.id === undefined) id = newId();
  else if (typeof req.id !== 'string' || !/^[\w.:-]{1,128}$/.test(req.id)) throw new InvalidRequestError('id', 'a string of 1..128 letters, digits, "_", "-", "." or ":"', req.id);
  else id = req.id;
  const guidance = req.guidance === undefined ? model.defaults.guidance : req.guidance;
  if (typeof guidance !== 'number' || !Number.isFinite(guidance) || guidance < LIMITS.guidance.min || guidance > LIMITS.guidance.max) {
    throw new InvalidRequestError('guidance', `a finite number in ${LIMITS.guidance.min}..${LIMITS.guidance.max}`, guidance);
  }
  const defaulted = MODEL_DEFAULTED.filter((k) => req[k] === undefined);
  return {
    id,
    prompt: text('prompt', req.prompt, false),
    negativePrompt: req.negativePrompt === undefined ? '' : text('negativePrompt', req.negativePrompt, true),
    seed: req.seed === undefined ? randomSeed() : integerIn('seed', req.seed, LIMITS.seed.min, LIMITS.seed.max),
    steps: req.steps === undefined ? model.defaults.steps : integerIn('steps', req.steps, LIMITS.steps.min, LIMITS.steps.max),
    guidance,
    width: size('width'),
    height: size('height'),
    ...images,
    ...(defaulted.length ? { defaulted } : {}),
  };
}

/** image, mask, strength and paddingMaskCrop: each only where it means something, on a model that can encode images. */
function imageFields(req: Partial<GenerateRequest> & Record<string, unknown>, model: ModelInfo): Pick<NormalizedRequest, 'image' | 'mask' | 'strength' | 'paddingMaskCrop'> {
  if (req.image === undefined) {
    for (const field of ['mask', 'strength', 'paddingMaskCrop'] as const) {
      if (req[field] !== undefined) throw new InvalidRequestError(field, 'only with an image (image to image or inpainting)', req[field]);
    }
    return {};
  }
  if (!model.imageInput) {
    throw new InvalidRequestError('image', `a model with a VAE encoder (${model.id} has no vae_encoder/model.onnx: it does text to image only)`, '<an image>');
  }
  const size = pngSize('image', req.image);
  const out: Pick<NormalizedRequest, 'image' | 'mask' | 'strength' | 'paddingMaskCrop'> = { image: req.image };
  const strength = req.strength ?? LIMITS.strength.default;
  if (typeof strength !== 'number' || !Number.isFinite(strength) || strength <= LIMITS.strength.min || strength > LIMITS.strength.max) {
    throw new InvalidRequestError('strength', `a number in (${LIMITS.strength.min}, ${LIMITS.strength.max}] (1: start from noise)`, strength);
  }
  out.strength = strength;
  if (req.mask !== undefined) {
    const m = pngSize('mask', req.mask);
    if (m.width !== size.width || m.height !== size.height) throw new InvalidRequestError('mask', `a PNG the image's size, ${size.width}x${size.height}`, `a ${m.width}x${m.height} PNG`);
    out.mask = req.mask;
  }
  if (req.paddingMaskCrop !== undefined) {
    if (out.mask === undefined) throw new InvalidRequestError('paddingMaskCrop', 'only with a mask (inpainting)', req.paddingMaskCrop);
    out.paddingMaskCrop = integerIn('paddingMaskCrop', req.paddingMaskCrop, LIMITS.paddingMaskCrop.min, LIMITS.paddingMaskCrop.max);
  }
  return out;
}

/**
 * A request normalized against one model, checked again against the model
 * that will run it (after a switch): the fields the first model filled in are
 * filled in by this one, every field is checked against this one's limits,
 * and the id and seed stay (same seed, same image). A request stored before
 * `defaulted` existed keeps every field as it is.
 */
export function renormalizeRequest(req: NormalizedRequest, model: ModelInfo): NormalizedRequest {
  const { defaulted = [], ...fields } = req;
  const raw: Record<string, unknown> = { ...fields };
  for (const k of defaulted) delete raw[k];
  try {
    return normalizeRequest(raw, model, () => req.id, () => req.seed);
  } catch (e) {
    // accepted for another model: say which model refuses it now
    if (e instanceof InvalidRequestError) e.message = `${e.message} (${model.id}, the model loaded since the request was accepted, does not take it; send it again with a value in range)`;
    throw e;
  }
}

/** SHA-256 of a file, in hex (Web Crypto: the page, the worker and Node alike). */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>));
  return [...digest].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/** The settings a request ran with, as an image records them: input images by hash and size, not their bytes (which fields were defaulted is the engine's business). */
export async function requestSettings({ defaulted: _, image, mask, ...settings }: NormalizedRequest): Promise<RequestSettings> {
  const info = async (field: string, png: Uint8Array) => ({ sha256: await sha256Hex(png), ...pngSize(field, png) });
  return { ...settings, ...(image ? { image: await info('image', image) } : {}), ...(mask ? { mask: await info('mask', mask) } : {}) };
}
