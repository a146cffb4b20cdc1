// Where a request's denoising tensors live, and the four things done to them:
// a transformer run over rows of several requests, classifier-free guidance
// with the Euler step, a read-back (previews, tiled decodes), and the VAE.
//
// HostDenoiser keeps them in JavaScript arrays: every step uploads each row's
// latents and prompt embeddings and reads its velocity back (wasm, and WebGPU
// for models with float16 I/O). WebGpuDenoiser (webgpu-denoiser.ts) keeps them
// in GPU buffers for the request's life: the embeddings are uploaded once, the
// update runs on the device, and only previews and the decoded image come back.
// Both count the bytes each request moves between host and device.
import type { LoadedModel } from '../model/load-model.ts';
import type { Ort } from '../model/component-session.ts';
import { decodeLatents } from '../sd3/decode.ts';
import { combineGuidance, predictRows } from '../sd3/denoise-step.ts';
import type { PromptEmbedding } from '../sd3/encode-prompt.ts';
import { blendKnown, type KnownRegion } from '../sd3/image-to-image.ts';
import type { RequestScope } from '../interleaver/request-scope.ts';
import type { StageTimer } from '../stage-timing.ts';

export type Branch = 'uncond' | 'cond';

/** One transformer row: a branch of one request. */
export interface DenoiseRow {
  scope: RequestScope;
  branch: Branch;
}

/** A request's tensors, wherever they live. */
export interface RequestTensors {
  /** Bytes held for the request now. */
  readonly bytes: number;
  /** Every branch of the current step has its velocity. */
  readonly ready: boolean;
  /** Frees everything at once (idempotent). */
  release(): void;
}

/** Bytes a request moved between host and device: at its start (noise, embeddings), in its denoising steps (rows in, velocities out, the update) and for previews. */
export interface RequestTransfers {
  beginUploadBytes: number;
  stepUploadBytes: number;
  stepDownloadBytes: number;
  previewBytes: number;
}

export const newTransfers = (): RequestTransfers => ({ beginUploadBytes: 0, stepUploadBytes: 0, stepDownloadBytes: 0, previewBytes: 0 });

export interface Denoiser {
  /** 'device': latents, embeddings and the update stay on the GPU between steps. */
  readonly residency: 'host' | 'device';
  /** Takes a request's starting latents and prompt embeddings, and to inpaint the region it keeps (on the device: uploaded, once). */
  begin(s: RequestScope, latents: Float32Array, cond: PromptEmbedding, uncond: PromptEmbedding | null, known?: KnownRegion | null): RequestTensors;
  /** One transformer run over rows of one image size; each row's velocity stays with its request. */
  predict(rows: readonly DenoiseRow[], latentShape: readonly [number, number, number]): Promise<void>;
  /** Guidance and one Euler step for each request (both branches back), then an inpainting request's kept region put back; returns those whose velocity was not finite. */
  advance(scopes: readonly RequestScope[]): Promise<Set<RequestScope>>;
  /** The request's latents on the host (previews, tiled decodes); counted as preview bytes when they cross. */
  readLatents(s: RequestScope): Promise<Float32Array>;
  /** Same-size requests' latents through the VAE, in one run: RGBA per request. */
  decode(batch: readonly RequestScope[], latentH: number, latentW: number): Promise<Uint8ClampedArray[]>;
  /** Device tensors held for requests now (GPU buffers, onnxruntime GPU outputs): 0 when none runs. */
  readonly liveTensors: number;
  /** Bytes this denoiser moved itself, beyond what the sessions count. */
  readonly transfers: { uploadBytes: number; downloadBytes: number };
  /** Where it adds the GPU time of its own passes (the interleaver times every call on the wall clock and hands it this). */
  stages?: StageTimer;
}

class HostTensors implements RequestTensors {
  velocity: Record<Branch, Float32Array | null> = { uncond: null, cond: null };
  constructor(
    public latents: Float32Array | null,
    public cond: PromptEmbedding | null,
    public uncond: PromptEmbedding | null,
    public known: KnownRegion | null,
  ) {}

  get bytes(): number {
    const emb = (e: PromptEmbedding | null) => (e ? e.embeds.byteLength + e.pooled.byteLength : 0);
    const known = this.known ? this.known.init.byteLength + this.known.noise.byteLength + this.known.mask.byteLength : 0;
    return (this.latents?.byteLength ?? 0) + emb(this.cond) + emb(this.uncond) + known;
  }

  get ready(): boolean {
    return this.velocity.cond !== null && (this.uncond === null || this.velocity.uncond !== null);
  }

  release(): void {
    this.latents = null;
    this.cond = null;
    this.uncond = null;
    this.known = null;
    this.velocity = { uncond: null, cond: null };
  }
}

const host = (s: RequestScope): HostTensors => {
  if (!(s.tensors instanceof HostTensors) || !s.tensors.latents) throw new Error(`request ${s.id} has no tensors (released)`);
  return s.tensors;
};

/** Tensors in JavaScript arrays: every step uploads rows and reads velocities back. */
export class HostDenoiser implements Denoiser {
  readonly residency = 'host' as const;
  readonly liveTensors = 0;
  readonly transfers = { uploadBytes: 0, downloadBytes: 0 };
  /** Unused here: the host path has no GPU passes of its own, its stages are wall time only. */
  stages?: StageTimer;

  constructor(
    private readonly model: LoadedModel,
    private readonly ort: Ort,
  ) {}

  begin(_s: RequestScope, latents: Float32Array, cond: PromptEmbedding, uncond: PromptEmbedding | null, known: KnownRegion | null = null): RequestTensors {
    return new HostTensors(latents, cond, uncond, known);
  }

  async predict(rows: readonly DenoiseRow[], latentShape: readonly [number, number, number]): Promise<void> {
    const inputs = rows.map(({ scope, branch }) => {
      const t = host(scope);
      return { latents: t.latents!, timestep: scope.scheduler.timestep, embedding: t[branch]! };
    });
    const velocities = await predictRows(this.model, this.ort, inputs, latentShape);
    rows.forEach(({ scope, branch }, i) => {
      // each row went up whole (latents, embeddings, pooled, timestep) and its velocity came back
      const row = inputs[i];
      scope.transfers.stepUploadBytes += row.latents.byteLength + row.embedding.embeds.byteLength + row.embedding.pooled.byteLength + 4;
      scope.transfers.stepDownloadBytes += velocities[i].byteLength;
      if (scope.tensors instanceof HostTensors && scope.tensors.latents) scope.tensors.velocity[branch] = velocities[i];
    });
  }

  async advance(scopes: readonly RequestScope[]): Promise<Set<RequestScope>> {
    const bad = new Set<RequestScope>();
    for (const s of scopes) {
      const t = host(s);
      const { uncond, cond } = t.velocity;
      t.velocity = { uncond: null, cond: null };
      const v = uncond ? combineGuidance(uncond, cond!, s.request.guidance, uncond) : cond!;
      if (!allFinite(v)) bad.add(s);
      else {
        s.scheduler.step(t.latents!, v);
        // inpainting: the region kept, noised to the sigma just reached (the clean latents after the last step)
        if (t.known) blendKnown(t.latents!, t.known.init, t.known.noise, t.known.mask, s.scheduler.sigma);
      }
    }
    return bad;
  }

  async readLatents(s: RequestScope): Promise<Float32Array> {
    return host(s).latents!;
  }

  decode(batch: readonly RequestScope[], latentH: number, latentW: number): Promise<Uint8ClampedArray[]> {
    return decodeLatents(this.model, this.ort, batch.map((s) => host(s).latents!), latentH, latentW);
  }
}

function allFinite(a: Float32Array): boolean {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return false;
  return true;
}
