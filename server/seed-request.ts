// The seed's request body (diffusers' examples/server-async, a pydantic model)
// read into engine requests. Types are checked here, in FastAPI's 422 shape,
// because the seed's clients parse it; ranges are left to the engine's own
// validation (workers/engine/api/validate.ts), whose errors are renamed to the
// fields the client sent. Image to image and inpainting take diffusers' own
// argument names: `image` and `mask_image` (each a base64 PNG, a data URL, or
// one of this server's image URLs), `strength` and `padding_mask_crop`; input
// unusable there is a 400 in the same shape.
import type { GenerateRequest } from '../workers/engine/api/types.ts';
import { InvalidRequestError } from '../workers/engine/errors.ts';

/** One entry of FastAPI's validation `detail` list. */
export interface ValidationIssue {
  type: string;
  loc: (string | number)[];
  msg: string;
  input: unknown;
  ctx?: Record<string, unknown>;
}

/** An error the server answers with `{"detail": …}` and this status. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly detail: string | ValidationIssue[],
  ) {
    super(typeof detail === 'string' ? detail : detail.map((d) => d.msg).join('; '));
  }
}

/** The seed's defaults (its pydantic model), not the model's: its clients rely on them. */
export const SEED_DEFAULTS = { num_inference_steps: 28, num_images_per_prompt: 1 } as const;
/** The seed has no limit; one request may not hold the interleaver to itself. */
export const MAX_IMAGES_PER_PROMPT = 32;

/** Engine field → the name the client sent, for error messages. */
const CLIENT_NAME: Record<string, string> = {
  prompt: 'prompt',
  negativePrompt: 'negative_prompt',
  steps: 'num_inference_steps',
  guidance: 'guidance_scale',
  seed: 'seed',
  width: 'width',
  height: 'height',
  image: 'image',
  mask: 'mask_image',
  strength: 'strength',
  paddingMaskCrop: 'padding_mask_crop',
};

/** Engine fields of image requests: their bad values are 400 (the input cannot be used), as the seed answers a request it cannot run. */
const IMAGE_FIELDS = new Set(['image', 'mask', 'strength', 'paddingMaskCrop']);

/** The client fields that carry an image, and where the engine takes it. */
export const IMAGE_INPUTS = { image: 'image', mask_image: 'mask' } as const;
export type ImageInputField = keyof typeof IMAGE_INPUTS;

export interface SeedRequest {
  prompt: string;
  /** One engine request per image (without id and seed when random). */
  base: Omit<GenerateRequest, 'id' | 'seed'>;
  /** The first image's seed when the client chose one; image i gets seed + i. */
  seed: number | undefined;
  images: number;
  /** `image` and `mask_image` as sent: the server reads each into base.image / base.mask (readImageInput). */
  inputs: Partial<Record<ImageInputField, string>>;
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** pydantic's lax int: an integer, a float without fraction, or a string of one; never a bool. */
function laxInt(field: string, v: unknown, issues: ValidationIssue[]): number | undefined {
  if (typeof v === 'number' && Number.isFinite(v)) {
    if (Number.isInteger(v)) return v;
    issues.push({ type: 'int_from_float', loc: ['body', field], msg: 'Input should be a valid integer, got a number with a fractional part', input: v });
    return undefined;
  }
  if (typeof v === 'string' && /^\s*[+-]?\d+\s*$/.test(v)) return Number(v);
  if (typeof v === 'string') issues.push({ type: 'int_parsing', loc: ['body', field], msg: 'Input should be a valid integer, unable to parse string as an integer', input: v });
  else issues.push({ type: 'int_type', loc: ['body', field], msg: 'Input should be a valid integer', input: v });
  return undefined;
}

function laxFloat(field: string, v: unknown, issues: ValidationIssue[]): number | undefined {
  if (typeof v === 'number') return v;
  if (typeof v === 'string' && v.trim() !== '' && Number.isFinite(Number(v))) return Number(v);
  if (typeof v === 'string') issues.push({ type: 'float_parsing', loc: ['body', field], msg: 'Input should be a valid number, unable to parse string as a number', input: v });
  else issues.push({ type: 'float_type', loc: ['body', field], msg: 'Input should be a valid number', input: v });
  return undefined;
}

function str(field: string, v: unknown, issues: ValidationIssue[]): string | undefined {
  if (typeof v === 'string') return v;
  issues.push({ type: 'string_type', loc: ['body', field], msg: 'Input should be a valid string', input: v });
  return undefined;
}

/**
 * Reads the seed's body: 422 with every type problem (as pydantic lists them),
 * then 400 "No prompt provided" for a blank prompt, as the seed does. Unknown
 * fields are ignored, as pydantic does.
 */
export function readSeedRequest(body: unknown): SeedRequest {
  if (body === undefined) throw new HttpError(422, [{ type: 'missing', loc: ['body'], msg: 'Field required', input: null }]);
  if (!isRecord(body)) {
    throw new HttpError(422, [{ type: 'model_attributes_type', loc: ['body'], msg: 'Input should be a valid dictionary or object to extract fields from', input: body }]);
  }
  const issues: ValidationIssue[] = [];
  const has = (k: string) => body[k] !== undefined;
  // nullable in the seed (model, negative_prompt) or ours and optional: null means absent
  const given = (k: string) => body[k] !== undefined && body[k] !== null;
  if (given('model')) str('model', body.model, issues);
  let prompt: string | undefined;
  if (!has('prompt')) issues.push({ type: 'missing', loc: ['body', 'prompt'], msg: 'Field required', input: body });
  else prompt = str('prompt', body.prompt, issues);
  const negative = given('negative_prompt') ? str('negative_prompt', body.negative_prompt, issues) : undefined;
  const steps = has('num_inference_steps') ? laxInt('num_inference_steps', body.num_inference_steps, issues) : SEED_DEFAULTS.num_inference_steps;
  const images = has('num_images_per_prompt') ? laxInt('num_images_per_prompt', body.num_images_per_prompt, issues) : SEED_DEFAULTS.num_images_per_prompt;
  const guidance = given('guidance_scale') ? laxFloat('guidance_scale', body.guidance_scale, issues) : undefined;
  const width = given('width') ? laxInt('width', body.width, issues) : undefined;
  const height = given('height') ? laxInt('height', body.height, issues) : undefined;
  const seed = given('seed') ? laxInt('seed', body.seed, issues) : undefined;
  const inputs: SeedRequest['inputs'] = {};
  for (const field of Object.keys(IMAGE_INPUTS) as ImageInputField[]) {
    if (given(field)) inputs[field] = str(field, body[field], issues);
  }
  const strength = given('strength') ? laxFloat('strength', body.strength, issues) : undefined;
  const paddingMaskCrop = given('padding_mask_crop') ? laxInt('padding_mask_crop', body.padding_mask_crop, issues) : undefined;
  if (issues.length) throw new HttpError(422, issues);
  if (!prompt!.trim()) throw new HttpError(400, 'No prompt provided');
  if (images! < 1 || images! > MAX_IMAGES_PER_PROMPT) {
    throw rangeError(new InvalidRequestError('num_images_per_prompt', `an integer in 1..${MAX_IMAGES_PER_PROMPT}`, images), images);
  }
  const base: SeedRequest['base'] = { prompt: prompt!, steps };
  if (negative !== undefined) base.negativePrompt = negative;
  if (guidance !== undefined) base.guidance = guidance;
  if (width !== undefined) base.width = width;
  if (height !== undefined) base.height = height;
  if (strength !== undefined) base.strength = strength;
  if (paddingMaskCrop !== undefined) base.paddingMaskCrop = paddingMaskCrop;
  return { prompt: prompt!, base, seed, images: images!, inputs };
}

/** An image field's value read: the PNG file's bytes (base64, plain or in a data URL), or the name of one of this server's images. */
export type ImageInput = { bytes: Uint8Array } | { stored: string };

/** What `image` and `mask_image` take, as their errors say. */
export const IMAGE_INPUT_ALLOWED = "a PNG file as base64 (plain or a data:image/png;base64 URL), or the URL of an image this server made (its /images/<name>.png path, or the whole URL an inference answered with)";

const BASE64 = /^(?:[A-Za-z0-9+/]+|[A-Za-z0-9_-]+)(={0,2})$/;
const DATA_URL = /^data:([^,]*),/i;

/**
 * Reads `image` or `mask_image`: a data URL or plain base64 (the standard or the URL-safe alphabet, padded or
 * not, line breaks allowed) gives the file's bytes, which the engine checks are a PNG; `/images/<name>` or an
 * http(s) URL whose path is that gives the name, which the server looks up among the images it made. The URL's
 * host is not checked (this server cannot know every name it is reached by); no other URL is fetched.
 */
export function readImageInput(field: ImageInputField, v: string): ImageInput {
  const bad = (received: string) => inputError(field, IMAGE_INPUT_ALLOWED, received, v);
  const trimmed = v.trim();
  const data = DATA_URL.exec(trimmed);
  if (data) {
    if (!/;base64$/i.test(data[1])) throw bad('a data URL that is not base64');
    return { bytes: base64(trimmed.slice(data[0].length), () => bad('a data URL whose base64 does not decode')) };
  }
  // a path names this server's image: base64 may start with "/" (a JPEG's "/9j/"), so only "/images/" is taken as one (a PNG's base64 starts "iVBORw0KGgo")
  if (trimmed.startsWith('/images/') || /^https?:\/\//i.test(trimmed)) {
    let path: string;
    try {
      path = new URL(trimmed, 'http://server.invalid').pathname;
    } catch {
      throw bad('a URL that does not parse');
    }
    if (!path.startsWith('/images/')) throw bad(`a URL that is not one of this server's images (it fetches no other)`);
    let name: string;
    try {
      name = decodeURIComponent(path.slice('/images/'.length));
    } catch {
      name = '';
    }
    return { stored: name };
  }
  return { bytes: base64(trimmed, () => bad(trimmed === '' ? 'an empty string' : 'a string that is not base64')) };
}

/** Strict base64: Buffer.from() skips what it cannot read, which would turn a typo into another file. */
function base64(text: string, bad: () => HttpError): Uint8Array {
  const s = text.replace(/\s+/g, '');
  const m = BASE64.exec(s);
  if (!m || (m[1] ? s.length % 4 !== 0 : s.length % 4 === 1)) throw bad();
  return new Uint8Array(Buffer.from(s, s.includes('-') || s.includes('_') ? 'base64url' : 'base64'));
}

/** An image field's value as an error echoes it: the whole value unless it is long (base64). */
const echo = (v: unknown) => (typeof v === 'string' && v.length > 200 ? `a string of ${v.length} characters` : v);

/** A request field the server itself cannot use (an image's encoding, an unknown image): 400, in the shape of the engine's errors. */
export function inputError(field: string, allowed: string, received: string, input: unknown): HttpError {
  return new HttpError(400, [{ type: 'value_error', loc: ['body', field], msg: `${field}: expected ${allowed}, got ${received}`, input: echo(input), ctx: { allowed } }]);
}

/**
 * The engine's InvalidRequestError in FastAPI's shape, naming the field as the client sent it: 422 for a
 * value out of range (the seed's fields, strength, padding_mask_crop), as pydantic's validators give; 400
 * for an image or mask the engine cannot use.
 */
export function rangeError(e: InvalidRequestError, input: unknown): HttpError {
  const name = CLIENT_NAME[e.field] ?? e.field;
  const msg = `${name}: ${e.message.slice(e.message.indexOf(':') + 2)}`;
  const image = IMAGE_FIELDS.has(e.field);
  const file = e.field === 'image' || e.field === 'mask';
  return new HttpError(file ? 400 : 422, [{ type: 'value_error', loc: ['body', name], msg, input: image ? echo(input) : input, ctx: { allowed: e.allowed } }]);
}

/** The value the client sent under the engine's field name (for the error's `input`). */
export function clientInput(body: Record<string, unknown>, engineField: string): unknown {
  return body[CLIENT_NAME[engineField] ?? engineField];
}
