// The seed's request body (diffusers' examples/server-async, a pydantic model)
// read into engine requests. Types are checked here, in FastAPI's 422 shape,
// because the seed's clients parse it; ranges are left to the engine's own
// validation (workers/engine/api/validate.ts), whose errors are renamed to the
// fields the client sent.
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
};

export interface SeedRequest {
  prompt: string;
  /** One engine request per image (without id and seed when random). */
  base: Omit<GenerateRequest, 'id' | 'seed'>;
  /** The first image's seed when the client chose one; image i gets seed + i. */
  seed: number | undefined;
  images: number;
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
  return { prompt: prompt!, base, seed, images: images! };
}

/** The engine's InvalidRequestError as FastAPI's 422, naming the field as the client sent it. */
export function rangeError(e: InvalidRequestError, input: unknown): HttpError {
  const name = CLIENT_NAME[e.field] ?? e.field;
  const msg = `${name}: ${e.message.slice(e.message.indexOf(':') + 2)}`;
  return new HttpError(422, [{ type: 'value_error', loc: ['body', name], msg, input, ctx: { allowed: e.allowed } }]);
}

/** The value the client sent under the engine's field name (for the error's `input`). */
export function clientInput(body: Record<string, unknown>, engineField: string): unknown {
  return body[CLIENT_NAME[engineField] ?? engineField];
}
