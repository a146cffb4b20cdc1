// The prompt form's state, outside the form: a model's defaults, a dropped or
// pasted PNG, the viewer's "Use these settings" and the X/Y plot all fill or
// read the same fields.
import type { GenerateRequest, ModelInfo } from '../../workers/engine/api/types.ts';
import type { ReadSettings, SettingsSource } from '../../workers/engine/png/settings-chunks.ts';
import { numOrNull, str } from './saved-settings.ts';

/** The settings one image was made with, as its metadata holds them. */
export type ImageSettings = Omit<SettingsSource, 'modelId'>;

/** An emptied number field is sent as NaN, so the engine names the field. */
const num = (v: number | null | undefined) => (v === null || v === undefined ? NaN : v);

export class GenerationForm {
  prompts = $state('');
  negativePrompt = $state('');
  seed = $state<number | null>(null);
  steps = $state<number | null>(null);
  guidance = $state<number | null>(null);
  width = $state<number | null>(null);
  height = $state<number | null>(null);
  count = $state(1);
  /** What the last fill did: where the settings came from and what could not be used. */
  notice = $state<{ kind: 'info' | 'warning'; text: string; unused: string[] } | null>(null);
  /** The model whose defaults filled the form: the same model loading again (a reload, a restart) keeps the person's settings. */
  defaultsFor = $state<string | null>(null);

  /** What survives a reload. */
  snapshot() {
    const { prompts, negativePrompt, seed, steps, guidance, width, height, count, defaultsFor } = this;
    return { prompts, negativePrompt, seed, steps, guidance, width, height, count, defaultsFor };
  }

  /** Fills the fields a snapshot saved; anything missing or of the wrong type keeps its value. */
  restore(saved: Record<string, unknown> | null): void {
    if (!saved) return;
    this.prompts = str(saved.prompts, this.prompts);
    this.negativePrompt = str(saved.negativePrompt, this.negativePrompt);
    this.seed = numOrNull(saved.seed, this.seed);
    this.steps = numOrNull(saved.steps, this.steps);
    this.guidance = numOrNull(saved.guidance, this.guidance);
    this.width = numOrNull(saved.width, this.width);
    this.height = numOrNull(saved.height, this.height);
    const count = numOrNull(saved.count, null);
    if (count !== null && Number.isInteger(count) && count >= 1 && count <= 16) this.count = count;
    this.defaultsFor = typeof saved.defaultsFor === 'string' ? saved.defaultsFor : null;
  }

  applyDefaults(model: ModelInfo): void {
    this.defaultsFor = model.id;
    this.steps = model.defaults.steps;
    this.guidance = model.defaults.guidance;
    this.width = model.defaults.width;
    this.height = model.defaults.height;
  }

  /** Fills every field an image's settings carry. */
  use(s: ImageSettings, from = 'the image'): void {
    this.prompts = s.prompt;
    this.negativePrompt = s.negativePrompt;
    this.seed = s.seed;
    this.steps = s.steps;
    this.guidance = s.guidance;
    this.width = s.width;
    this.height = s.height;
    this.count = 1;
    this.notice = { kind: 'info', text: `Settings from ${from}.`, unused: [] };
  }

  /** Fills what a PNG's chunks carry; names what it could not use (sampler, model, sizes the model does not allow). */
  applyPng(read: ReadSettings, fileName: string, model: ModelInfo | null): void {
    if (read.source === null) {
      this.notice = { kind: 'warning', text: `${fileName} carries no generation settings (no "parameters" or sd3-webgpu chunk); the form is unchanged.`, unused: [] };
      return;
    }
    const s = read.settings;
    const unused = [...read.unused];
    if (s.prompt !== undefined) this.prompts = s.prompt;
    if (s.negativePrompt !== undefined) this.negativePrompt = s.negativePrompt;
    if (s.seed !== undefined) this.seed = s.seed;
    if (s.steps !== undefined) this.steps = s.steps;
    if (s.guidance !== undefined) this.guidance = s.guidance;
    if (s.width !== undefined && s.height !== undefined) {
      const ok = (v: number) => !model || (v >= model.limits.minSize && v <= model.limits.maxSize && v % model.limits.sizeMultiple === 0);
      if (ok(s.width) && ok(s.height)) [this.width, this.height] = [s.width, s.height];
      else unused.push(`Size: ${s.width}x${s.height} (this model makes ${model!.limits.minSize}–${model!.limits.maxSize}, multiples of ${model!.limits.sizeMultiple})`);
    }
    if (s.model !== undefined && model && s.model !== model.id) unused.push(`Model: ${s.model} (the loaded model is ${model.id})`);
    this.count = 1;
    const from = read.source === 'a1111' ? 'its A1111 "parameters" chunk' : 'its sd3-webgpu settings';
    this.notice = { kind: unused.length ? 'warning' : 'info', text: `Settings from ${fileName} (${from}).`, unused };
  }

  /** The base settings of one request (the first prompt line), for the X/Y plot. */
  base(): Omit<GenerateRequest, 'prompt'> & { prompts: string[] } {
    return {
      prompts: this.lines(),
      negativePrompt: this.negativePrompt,
      ...(this.seed === null ? {} : { seed: num(this.seed) }),
      steps: num(this.steps),
      guidance: num(this.guidance),
      width: num(this.width),
      height: num(this.height),
    };
  }

  lines(): string[] {
    const lines = this.prompts.split('\n').map((l) => l.trim()).filter(Boolean);
    return lines.length ? lines : [''];
  }

  /** One request per prompt line and image; with a seed, image k gets seed + k. */
  requests(): GenerateRequest[] {
    const { prompts, seed, ...rest } = this.base();
    const requests: GenerateRequest[] = [];
    for (const prompt of prompts) {
      for (let k = 0; k < Math.max(1, this.count); k++) requests.push({ prompt, ...rest, ...(seed === undefined ? {} : { seed: seed + requests.length }) });
    }
    return requests;
  }
}
