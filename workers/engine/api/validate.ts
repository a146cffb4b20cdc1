// Request validation: every field checked against the loaded model's limits,
// with errors that name the field and the allowed range.
import { InvalidRequestError } from '../errors.ts';
import type { GenerateRequest, ModelInfo, NormalizedRequest } from './types.ts';

export const LIMITS = {
  steps: { min: 1, max: 500 },
  guidance: { min: 0, max: 100 },
  seed: { min: 0, max: 0xffffffff },
  promptChars: 20_000,
  idChars: 128,
} as const;

const KNOWN_FIELDS = new Set(['id', 'prompt', 'negativePrompt', 'seed', 'steps', 'guidance', 'width', 'height']);

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
  const size = (field: 'width' | 'height') =>
    req[field] === undefined ? model.defaults[field] : integerIn(field, req[field], minSize, maxSize, (n) => n % sizeMultiple === 0, `, a multiple of ${sizeMultiple}`);
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
    ...(defaulted.length ? { defaulted } : {}),
  };
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

/** The settings a request ran with, as an image records them (which fields were defaulted is the engine's business). */
export function requestSettings({ defaulted: _, ...settings }: NormalizedRequest): Omit<NormalizedRequest, 'defaulted'> {
  return settings;
}
