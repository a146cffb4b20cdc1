// The prompt form's state, outside the form: a model's defaults, a dropped or
// pasted PNG, the viewer's "Use these settings" and the X/Y plot all fill or
// read the same fields. The Image slot (image to image, inpainting) holds its
// input image, the mask painted on it and the strength here too.
import type { GenerateRequest, ModelInfo } from '../../workers/engine/api/types.ts';
import { LIMITS, sizeFromImage } from '../../workers/engine/api/validate.ts';
import type { ReadSettings, SettingsSource } from '../../workers/engine/png/settings-chunks.ts';
import { readInputImage, type InputImage } from './input-image.ts';
import { MaskEditor } from './mask-editor.svelte.ts';
import { decodeImageFile, toGrayscale } from '../../workers/engine/image/pixels.ts';
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
  /** The Image slot's input (absent: text to image). The slot (image, mask, strength) is not saved across a reload: its bytes stay out of localStorage. */
  image = $state.raw<InputImage | null>(null);
  /** The mask painted over the input image (sent only where something is painted). */
  mask = $state.raw<MaskEditor | null>(null);
  /** How much of the schedule an image request runs, in (0, 1] (the engine's default to start with). */
  strength = $state<number | null>(LIMITS.strength.default);
  /** Why the last image offered to the slot was not taken ('' when it was). */
  imageError = $state('');
  private imageLoads = 0;
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

  /** Puts an image in the Image slot (a new, empty mask over it); the size fields take the image's size as the model allows it. */
  setImage(image: InputImage, model: ModelInfo | null): void {
    if (this.image) URL.revokeObjectURL(this.image.url);
    this.image = image;
    this.mask = new MaskEditor(image.width, image.height);
    const size = model ? sizeFromImage(image, model.limits) : image;
    this.width = size.width;
    this.height = size.height;
  }

  /** Reads a file (dropped, pasted, opened, or a stored image's PNG) into the Image slot; a file it cannot use leaves the slot as it was and says why. */
  async loadImage(file: Blob, name: string, model: ModelInfo | null): Promise<boolean> {
    const load = ++this.imageLoads;
    try {
      const image = await readInputImage(file, name);
      // a later file offered meanwhile wins
      if (load !== this.imageLoads) {
        URL.revokeObjectURL(image.url);
        return false;
      }
      this.setImage(image, model);
      this.imageError = '';
      return true;
    } catch (e) {
      if (load === this.imageLoads) this.imageError = `${name}: ${(e as Error).message}; the Image slot is unchanged.`;
      return false;
    }
  }

  /** An image request's stored inputs back in the slot: the init image, and its mask painted over it again. */
  async restoreInputs(image: Blob, mask: Blob | null, name: string, model: ModelInfo | null): Promise<void> {
    if (!(await this.loadImage(image, name, model)) || !mask || !this.mask) return;
    const m = decodeImageFile(new Uint8Array(await mask.arrayBuffer()), 'mask');
    if (m.width === this.mask.width && m.height === this.mask.height) this.mask.load(toGrayscale(m).data);
  }

  /** Empties the Image slot: requests are text to image again. */
  removeImage(): void {
    if (this.image) URL.revokeObjectURL(this.image.url);
    this.image = null;
    this.mask = null;
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
    if (s.strength !== undefined) this.strength = s.strength;
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
    // an img2img image's "Denoising strength" (the init image itself is not in the file)
    if (s.strength !== undefined) {
      if (s.strength > LIMITS.strength.min && s.strength <= LIMITS.strength.max) this.strength = s.strength;
      else unused.push(`Denoising strength: ${s.strength} (strength is in (0, 1])`);
    }
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

  /** The image fields of a request: the input image, the strength, and the mask where something is painted (none without an image, or with `imageInput` false: a model without a VAE encoder). */
  imageFields(imageInput = true): Pick<GenerateRequest, 'image' | 'mask' | 'strength'> {
    if (!this.image || !imageInput) return {};
    const mask = this.mask?.png();
    return { image: this.image.png, strength: num(this.strength), ...(mask ? { mask } : {}) };
  }

  /** The base settings of one request (the first prompt line), for the X/Y plot; `imageInput`: the model takes an input image. */
  base(imageInput = true): Omit<GenerateRequest, 'prompt'> & { prompts: string[] } {
    return {
      prompts: this.lines(),
      negativePrompt: this.negativePrompt,
      ...(this.seed === null ? {} : { seed: num(this.seed) }),
      steps: num(this.steps),
      guidance: num(this.guidance),
      width: num(this.width),
      height: num(this.height),
      ...this.imageFields(imageInput),
    };
  }

  lines(): string[] {
    const lines = this.prompts.split('\n').map((l) => l.trim()).filter(Boolean);
    return lines.length ? lines : [''];
  }

  /** One request per prompt line and image; with a seed, image k gets seed + k. */
  requests(imageInput = true): GenerateRequest[] {
    const { prompts, seed, ...rest } = this.base(imageInput);
    const requests: GenerateRequest[] = [];
    for (const prompt of prompts) {
      for (let k = 0; k < Math.max(1, this.count); k++) requests.push({ prompt, ...rest, ...(seed === undefined ? {} : { seed: seed + requests.length }) });
    }
    return requests;
  }
}
