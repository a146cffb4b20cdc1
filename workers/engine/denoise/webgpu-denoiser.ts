// Denoising that stays on the GPU (onnxruntime PR #17480 measured the CPU
// round trip between steps at twice the step itself). Every session runs on
// the app's own GPUDevice, so the engine can use that device directly:
//   - a request's noise and prompt embeddings are uploaded once, into buffers
//     it owns until it ends, is cancelled or fails;
//   - a transformer run's batch is assembled with buffer-to-buffer copies and
//     fed as GPU tensors; its output stays on the GPU (preferredOutputLocation)
//     and each row's velocity is copied to its request;
//   - classifier-free guidance and the Euler step run as one compute shader in
//     place on the latents, raising a flag when a value is not finite (the
//     only per-step read-back: 4 bytes a request);
//   - the VAE takes the unscaled latents from the GPU too.
// Timing: a transformer run returns once the GPU has finished it
// (onSubmittedWorkDone), so the interleaver's wall clock around it covers the
// GPU work; the guidance/Euler pass carries timestamp queries where the device
// has `timestamp-query`, read back with the finite flags (no extra map).
// Ordering needs no fences: onnxruntime submits its work on the same queue at
// the end of every run, and ours is submitted before or after a run, never
// during one.
import { APP_BUFFER_LABEL } from '../app-buffers.ts';
import type { Ort, Tensor } from '../model/component-session.ts';
import type { LoadedModel } from '../model/load-model.ts';
import { chwToRgba } from '../sd3/decode.ts';
import type { PromptEmbedding } from '../sd3/encode-prompt.ts';
import type { KnownRegion } from '../sd3/image-to-image.ts';
import type { RequestScope } from '../interleaver/request-scope.ts';
import type { Branch, DenoiseRow, Denoiser, RequestTensors } from './denoiser.ts';
import { GpuPassTimer, type StageTimer } from '../stage-timing.ts';

// GPUBufferUsage and GPUMapMode, by value: the engine core runs where these globals are absent (Node)
const MAP_READ = 0x0001;
const COPY_SRC = 0x0004;
const COPY_DST = 0x0008;
const UNIFORM = 0x0040;
const STORAGE = 0x0080;
const MODE_READ = 0x0001;
const WORKGROUP = 64;

/** v = u + g (c - u) (guided) or v = c; flag[slot] when v is not finite; else x += dt v. */
const UPDATE_WGSL = /* wgsl */ `
struct Update { count: u32, guided: u32, guidance: f32, dt: f32, slot: u32 }
@group(0) @binding(0) var<storage, read_write> latents: array<f32>;
@group(0) @binding(1) var<storage, read> uncond: array<f32>;
@group(0) @binding(2) var<storage, read> cond: array<f32>;
@group(0) @binding(3) var<storage, read_write> flags: array<atomic<u32>>;
@group(0) @binding(4) var<uniform> p: Update;
@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  let i = id.x;
  if (i >= p.count) { return; }
  var v = cond[i];
  if (p.guided == 1u) {
    let u = uncond[i];
    v = u + p.guidance * (v - u);
  }
  // exponent all ones: infinity or NaN
  if ((bitcast<u32>(v) & 0x7f800000u) == 0x7f800000u) {
    atomicOr(&flags[p.slot], 1u);
    return;
  }
  latents[i] = latents[i] + p.dt * v;
}`;

/** Inpainting, after the update: x = (1 - m) (sigma n + (1 - sigma) init) + m x, the mask one plane for every channel. */
const BLEND_WGSL = /* wgsl */ `
struct Blend { count: u32, plane: u32, sigma: f32, pad: u32 }
@group(0) @binding(0) var<storage, read_write> latents: array<f32>;
@group(0) @binding(1) var<storage, read> init: array<f32>;
@group(0) @binding(2) var<storage, read> noise: array<f32>;
@group(0) @binding(3) var<storage, read> mask: array<f32>;
@group(0) @binding(4) var<uniform> b: Blend;
@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  let i = id.x;
  if (i >= b.count) { return; }
  let m = mask[i % b.plane];
  let known = b.sigma * noise[i] + (1.0 - b.sigma) * init[i];
  latents[i] = (1.0 - m) * known + m * latents[i];
}`;

/** z = x / scaling + shift, into row `offset` of the VAE's batch. */
const UNSCALE_WGSL = /* wgsl */ `
struct Unscale { count: u32, offset: u32, scaling: f32, shift: f32 }
@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<uniform> q: Unscale;
@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  let i = id.x;
  if (i >= q.count) { return; }
  dst[q.offset + i] = src[i] / q.scaling + q.shift;
}`;

class DeviceTensors implements RequestTensors {
  /** This step's velocity per branch, copied out of the transformer's output. */
  readonly velocity: Record<Branch, GPUBuffer | null>;
  has: Record<Branch, boolean> = { uncond: false, cond: false };
  private released = false;

  constructor(
    private readonly owner: WebGpuDenoiser,
    readonly latents: GPUBuffer,
    readonly embeds: Partial<Record<Branch, GPUBuffer>>,
    readonly pooled: Partial<Record<Branch, GPUBuffer>>,
    readonly guided: boolean,
    /** Inpainting: the clean init latents, their noise and the latent mask. */
    readonly known: { init: GPUBuffer; noise: GPUBuffer; mask: GPUBuffer; plane: number } | null,
  ) {
    this.velocity = { cond: owner.buffer(latents.size), uncond: guided ? owner.buffer(latents.size) : null };
  }

  get all(): GPUBuffer[] {
    const known = this.known ? [this.known.init, this.known.noise, this.known.mask] : [];
    return [this.latents, ...Object.values(this.embeds), ...Object.values(this.pooled), ...Object.values(this.velocity), ...known].filter((b): b is GPUBuffer => b !== null && b !== undefined);
  }

  get bytes(): number {
    return this.released ? 0 : this.all.reduce((n, b) => n + b.size, 0);
  }

  get alive(): boolean {
    return !this.released;
  }

  get ready(): boolean {
    return this.has.cond && (!this.guided || this.has.uncond);
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    for (const b of this.all) this.owner.destroy(b);
  }
}

export class WebGpuDenoiser implements Denoiser {
  readonly residency = 'device' as const;
  readonly transfers = { uploadBytes: 0, downloadBytes: 0 };
  /** Where the guidance pass's GPU time goes (set by the interleaver). */
  stages?: StageTimer;
  private live = 0;
  private update: GPUComputePipeline | null = null;
  private unscale: GPUComputePipeline | null = null;
  private blend: GPUComputePipeline | null = null;

  // A call that fails here may be a device loss the browser reports later: the interleaver's fail() tells the two apart, for every stage alike.
  constructor(
    private readonly device: GPUDevice,
    private readonly model: LoadedModel,
    private readonly ort: Ort,
  ) {}

  get liveTensors(): number {
    return this.live;
  }

  /** A storage buffer on our device, counted until destroyed. */
  buffer(bytes: number, usage = STORAGE | COPY_SRC | COPY_DST): GPUBuffer {
    this.live++;
    return this.device.createBuffer({ label: `${APP_BUFFER_LABEL} denoiser`, size: Math.max(4, bytes), usage });
  }

  destroy(b: GPUBuffer): void {
    this.live--;
    b.destroy();
  }

  private upload(data: Float32Array): GPUBuffer {
    const b = this.buffer(data.byteLength);
    this.device.queue.writeBuffer(b, 0, data as Float32Array<ArrayBuffer>);
    this.transfers.uploadBytes += data.byteLength;
    return b;
  }

  private gpuTensor(b: GPUBuffer, dims: readonly number[]): Tensor {
    return this.ort.Tensor.fromGpuBuffer(b, { dataType: 'float32', dims });
  }

  begin(s: RequestScope, latents: Float32Array, cond: PromptEmbedding, uncond: PromptEmbedding | null, known: KnownRegion | null = null): RequestTensors {
    const embeds: Partial<Record<Branch, GPUBuffer>> = { cond: this.upload(cond.embeds) };
    const pooled: Partial<Record<Branch, GPUBuffer>> = { cond: this.upload(cond.pooled) };
    if (uncond) {
      embeds.uncond = this.upload(uncond.embeds);
      pooled.uncond = this.upload(uncond.pooled);
    }
    const kept = known ? { init: this.upload(known.init), noise: this.upload(known.noise), mask: this.upload(known.mask), plane: known.mask.length } : null;
    const t = new DeviceTensors(this, this.upload(latents), embeds, pooled, uncond !== null, kept);
    s.transfers.beginUploadBytes += t.bytes - t.latents.size * (t.guided ? 2 : 1); // all but the velocity buffers
    return t;
  }

  async predict(rows: readonly DenoiseRow[], latentShape: readonly [number, number, number]): Promise<void> {
    const [C, h, w] = latentShape;
    const n = rows.length;
    const first = tensorsOf(rows[0].scope);
    const per = first.latents.size;
    const textBytes = first.embeds.cond!.size;
    const pooledBytes = first.pooled.cond!.size;
    const joint = this.model.transformerConfig.jointAttentionDim;
    const hidden = this.buffer(n * per);
    const text = this.buffer(n * textBytes);
    const pooled = this.buffer(n * pooledBytes);
    const timestep = new Float32Array(n);
    const enc = this.device.createCommandEncoder();
    rows.forEach(({ scope, branch }, r) => {
      const t = tensorsOf(scope);
      enc.copyBufferToBuffer(t.latents, 0, hidden, r * per, per);
      enc.copyBufferToBuffer(t.embeds[branch]!, 0, text, r * textBytes, textBytes);
      enc.copyBufferToBuffer(t.pooled[branch]!, 0, pooled, r * pooledBytes, pooledBytes);
      timestep[r] = scope.scheduler.timestep;
      scope.transfers.stepUploadBytes += 4; // its timestep: the one host tensor of the run
    });
    this.device.queue.submit([enc.finish()]);
    let out: Record<string, Tensor> | null = null;
    try {
      out = await this.model.transformer.run({
        hidden_states: this.gpuTensor(hidden, [n, C, h, w]),
        encoder_hidden_states: this.gpuTensor(text, [n, textBytes / 4 / joint, joint]),
        pooled_projections: this.gpuTensor(pooled, [n, pooledBytes / 4]),
        timestep: new this.ort.Tensor('float32', timestep, [n]),
      });
      const v = out.out_hidden_states;
      this.live++;
      const copy = this.device.createCommandEncoder();
      rows.forEach(({ scope, branch }, r) => {
        const t = scope.tensors;
        // a request cancelled while the run was in flight has no buffers left: its row is ignored
        if (!(t instanceof DeviceTensors) || !t.alive) return;
        copy.copyBufferToBuffer(v.gpuBuffer as GPUBuffer, r * per, t.velocity[branch]!, 0, per);
        t.has[branch] = true;
      });
      this.device.queue.submit([copy.finish()]);
      // the run is over when the GPU has done it, not when onnxruntime has queued it: the caller's clock covers the GPU work
      await this.device.queue.onSubmittedWorkDone();
    } finally {
      if (out) {
        for (const t of Object.values(out)) t.dispose();
        this.live--;
      }
      for (const b of [hidden, text, pooled]) this.destroy(b);
    }
  }

  private pipelines(): { update: GPUComputePipeline; unscale: GPUComputePipeline; blend: GPUComputePipeline } {
    const make = (code: string) => this.device.createComputePipeline({ layout: 'auto', compute: { module: this.device.createShaderModule({ code }), entryPoint: 'main' } });
    this.update ??= make(UPDATE_WGSL);
    this.unscale ??= make(UNSCALE_WGSL);
    this.blend ??= make(BLEND_WGSL);
    return { update: this.update, unscale: this.unscale, blend: this.blend };
  }

  async advance(scopes: readonly RequestScope[]): Promise<Set<RequestScope>> {
    const { update, blend } = this.pipelines();
    // GPU time of the pass where the device has timestamp-query: two timestamps ahead of the flags in the one read-back
    const timer = this.stages ? GpuPassTimer.forDevice(this.device) : null;
    const head = timer ? 16 : 0;
    const flags = this.buffer(4 * scopes.length);
    const read = this.buffer(head + 4 * scopes.length, MAP_READ | COPY_DST);
    const params: GPUBuffer[] = [];
    let uniformBytes = 0;
    const enc = this.device.createCommandEncoder();
    // one pass, a dispatch per request: each writes only its own latents and flag
    const pass = enc.beginComputePass(timer ? { timestampWrites: timer.timestampWrites } : {});
    pass.setPipeline(update);
    scopes.forEach((s, slot) => {
      const t = tensorsOf(s);
      const count = t.latents.size / 4;
      const p = new ArrayBuffer(32);
      new Uint32Array(p, 0, 2).set([count, t.guided ? 1 : 0]);
      new Float32Array(p, 8, 2).set([s.request.guidance, s.scheduler.dt]);
      new Uint32Array(p, 16, 1)[0] = slot;
      const u = this.buffer(32, UNIFORM | COPY_DST);
      this.device.queue.writeBuffer(u, 0, p);
      params.push(u);
      uniformBytes += 32;
      s.transfers.stepUploadBytes += 32;
      s.transfers.stepDownloadBytes += 4; // its finite flag
      pass.setBindGroup(
        0,
        this.device.createBindGroup({
          layout: update.getBindGroupLayout(0),
          // unguided: the conditional velocity stands in for the unused unconditional binding
          entries: [t.latents, t.velocity.uncond ?? t.velocity.cond!, t.velocity.cond!, flags, u].map((buffer, binding) => ({ binding, resource: { buffer } })),
        }),
      );
      pass.dispatchWorkgroups(Math.ceil(count / WORKGROUP));
      if (t.known) {
        // inpainting: the kept region back, noised to the sigma this step reaches (dispatches in a pass run in order)
        const b = new ArrayBuffer(16);
        new Uint32Array(b, 0, 2).set([count, t.known.plane]);
        new Float32Array(b, 8, 1)[0] = s.scheduler.nextSigma;
        const ub = this.buffer(16, UNIFORM | COPY_DST);
        this.device.queue.writeBuffer(ub, 0, b);
        params.push(ub);
        uniformBytes += 16;
        s.transfers.stepUploadBytes += 16;
        pass.setPipeline(blend);
        pass.setBindGroup(0, this.device.createBindGroup({ layout: blend.getBindGroupLayout(0), entries: [t.latents, t.known.init, t.known.noise, t.known.mask, ub].map((buffer, binding) => ({ binding, resource: { buffer } })) }));
        pass.dispatchWorkgroups(Math.ceil(count / WORKGROUP));
        pass.setPipeline(update);
      }
      t.has = { uncond: false, cond: false };
    });
    pass.end();
    enc.copyBufferToBuffer(flags, 0, read, head, 4 * scopes.length);
    timer?.resolve(enc, read, 0);
    this.device.queue.submit([enc.finish()]);
    this.transfers.uploadBytes += uniformBytes;
    this.transfers.downloadBytes += head + 4 * scopes.length;
    try {
      await read.mapAsync(MODE_READ);
      const mapped = read.getMappedRange();
      const bad = new Uint32Array(mapped.slice(head));
      const gpuMs = timer ? GpuPassTimer.ms(new BigUint64Array(mapped.slice(0, 16))) : null;
      read.unmap();
      if (gpuMs !== null) this.stages?.recordGpu('guidance', gpuMs);
      const out = new Set<RequestScope>();
      scopes.forEach((s, i) => {
        if (bad[i]) out.add(s);
        else s.scheduler.stepped();
      });
      return out;
    } finally {
      for (const b of [flags, read, ...params]) this.destroy(b);
      timer?.destroy();
    }
  }

  async readLatents(s: RequestScope): Promise<Float32Array> {
    const t = tensorsOf(s);
    const read = this.buffer(t.latents.size, MAP_READ | COPY_DST);
    try {
      const enc = this.device.createCommandEncoder();
      enc.copyBufferToBuffer(t.latents, 0, read, 0, t.latents.size);
      this.device.queue.submit([enc.finish()]);
      await read.mapAsync(MODE_READ);
      const out = new Float32Array(read.getMappedRange().slice(0));
      read.unmap();
      this.transfers.downloadBytes += out.byteLength;
      s.transfers.previewBytes += out.byteLength;
      return out;
    } finally {
      this.destroy(read);
    }
  }

  async decode(batch: readonly RequestScope[], latentH: number, latentW: number): Promise<Uint8ClampedArray[]> {
    const { unscale } = this.pipelines();
    const { latentChannels, scalingFactor, shiftFactor, scaleFactor } = this.model.vaeConfig;
    const count = latentChannels * latentH * latentW;
    const z = this.buffer(4 * count * batch.length);
    const params: GPUBuffer[] = [];
    const enc = this.device.createCommandEncoder();
    batch.forEach((s, i) => {
      const p = new ArrayBuffer(16);
      new Uint32Array(p, 0, 2).set([count, i * count]);
      new Float32Array(p, 8, 2).set([scalingFactor, shiftFactor]);
      const u = this.buffer(16, UNIFORM | COPY_DST);
      this.device.queue.writeBuffer(u, 0, p);
      params.push(u);
      const pass = enc.beginComputePass();
      pass.setPipeline(unscale);
      pass.setBindGroup(0, this.device.createBindGroup({ layout: unscale.getBindGroupLayout(0), entries: [tensorsOf(s).latents, z, u].map((buffer, binding) => ({ binding, resource: { buffer } })) }));
      pass.dispatchWorkgroups(Math.ceil(count / WORKGROUP));
      pass.end();
    });
    this.device.queue.submit([enc.finish()]);
    this.transfers.uploadBytes += 16 * batch.length;
    try {
      const out = await this.model.vaeDecoder.run({ latent_sample: this.gpuTensor(z, [batch.length, latentChannels, latentH, latentW]) });
      const data = out.sample.data as Float32Array;
      const H = latentH * scaleFactor;
      const W = latentW * scaleFactor;
      const images = batch.map((_, i) => chwToRgba(data.subarray(i * 3 * H * W, (i + 1) * 3 * H * W), W, H));
      for (const t of Object.values(out)) t.dispose();
      return images;
    } finally {
      for (const b of [z, ...params]) this.destroy(b);
    }
  }
}

function tensorsOf(s: RequestScope): DeviceTensors {
  const t = s.tensors;
  if (!(t instanceof DeviceTensors) || !t.alive) throw new Error(`request ${s.id} has no tensors (released)`);
  return t;
}
