// Operators the web runtime lacks, rewritten into standard ONNX at load.
//
// Exports "optimized for DirectML" went through onnxruntime's transformer
// optimizer, whose GPU defaults emit com.microsoft operators that the CPU
// (wasm) provider of onnxruntime-web has no kernel for: NhwcConv, GroupNorm,
// SkipGroupNorm, BiasAdd, BiasSplitGelu ("Could not find an implementation for
// NhwcConv(1)"); WebGPU has no NhwcConv either, and neither runs the packed-QKV
// or packed-KV MultiHeadAttention the optimizer emits for unet ("not implemented"). Each becomes the standard ops
// it stands for, emitted where it stood; weights are not touched (a weight in
// another layout gets a Transpose node, which onnxruntime folds at load). The
// Transpose pairs NhwcConv was wrapped in (NCHW -> NHWC -> NCHW) are folded
// away. Everything else is copied byte for byte, as attention-chunks.ts does.
import { ATTRIBUTE, defaultOpset, graphField, graphInitializers, graphNodes, onnxNode, GRAPH, MODEL, NODE, ONNX_DTYPE, TENSOR, type NodeInfo } from './graph-info.ts';
import { toHalfBits } from './float16.ts';
import { readFields, readString, Reader, WIRE, Writer } from './protobuf.ts';
import { opsToLower, packedAttention } from './op-support.ts';

export { checkOps } from './op-support.ts';

export type WebBackend = import('../api/types.ts').BackendName;

const MS = 'com.microsoft';
const P = 'sd3webgpu_lower';

function tensor(name: string, dataType: number, dims: number[], raw: Uint8Array): Writer {
  const w = new Writer();
  for (const d of dims) w.int(TENSOR.dims, d);
  return w.int(TENSOR.dataType, dataType).string(TENSOR.name, name).bytes(TENSOR.rawData, raw);
}
const int64s = (name: string, values: number[]) => tensor(name, ONNX_DTYPE.INT64, [values.length], new Uint8Array(new BigInt64Array(values.map(BigInt)).buffer));
/** A scalar in the graph's float type (fp16 graphs compute in fp16: the constant must match). */
const scalar = (name: string, v: number, dataType: number) =>
  dataType === ONNX_DTYPE.FLOAT16 ? tensor(name, dataType, [], new Uint8Array(new Uint16Array([toHalfBits(v)]).buffer)) : tensor(name, ONNX_DTYPE.FLOAT, [], new Uint8Array(new Float32Array([v]).buffer));

/** Integer-list attributes of a node (perm, axes…), which NodeInfo does not keep. */
function intsAttr(model: Uint8Array, n: NodeInfo, name: string): number[] | undefined {
  let out: number[] | undefined;
  new Reader(model, n.field.dataStart, n.field.dataEnd).fields((f) => {
    if (f.field !== NODE.attribute) return;
    let attrName = '';
    const values: number[] = [];
    new Reader(model, f.dataStart, f.dataEnd).fields((a) => {
      if (a.field === ATTRIBUTE.name) attrName = readString(model, a);
      else if (a.field === ATTRIBUTE.ints && a.wire === WIRE.VARINT) values.push(a.value);
      else if (a.field === ATTRIBUTE.ints && a.wire === WIRE.LEN) {
        const r = new Reader(model, a.dataStart, a.dataEnd);
        while (r.pos < a.dataEnd) values.push(r.varint());
      }
    });
    if (attrName === name) out = values;
  });
  return out;
}

/** The node's attribute fields as they are (NhwcConv's carry over to Conv unchanged). */
function rawAttributes(model: Uint8Array, n: NodeInfo): Uint8Array[] {
  const out: Uint8Array[] = [];
  new Reader(model, n.field.dataStart, n.field.dataEnd).fields((f) => {
    if (f.field === NODE.attribute) out.push(model.subarray(f.start, f.end));
  });
  return out;
}

interface Emit {
  add(w: Writer): void;
  /** A constant shared by every rewrite (added once). */
  constant(name: string, make: () => Writer): string;
  opset: number;
  channels(tensor: string): number | undefined;
  /** A float scalar of the element type of tensor `like` (fp16 graphs compute in fp16; their GroupNorm gammas stay fp32). */
  scalar(v: number, like: string, out: string): string;
  /** `t` cast to the element type of `like`. */
  castLike(t: string, like: string, out: string): string;
}

/** ReduceMean over `axes`, keepdims: axes are an attribute up to opset 17, an input from 18. */
function reduceMean(e: Emit, x: string, axes: number[], out: string, name: string): void {
  if (e.opset >= 18) e.add(onnxNode('ReduceMean', [x, e.constant(`${P}/axes_${axes.join('_')}`, () => int64s(`${P}/axes_${axes.join('_')}`, axes))], [out], name, { keepdims: 1 }));
  else e.add(onnxNode('ReduceMean', [x], [out], name, { axes, keepdims: 1 }));
}

/** GroupNorm on x (NHWC when channelsLast, else NCHW), then the affine and SiLU when asked. */
function groupNorm(e: Emit, tag: string, x: string, gamma: string, beta: string, out: string, groups: number, epsilon: number, silu: boolean, channelsLast: boolean): void {
  const c = e.channels(gamma);
  if (!c || c % groups) throw new Error(`GroupNorm ${tag}: gamma ${gamma} must be a constant whose length divides into ${groups} groups`);
  // [N, H*W, G, C/G] (channels last) or [N, G, C/G * H*W]: statistics over all but batch and group
  const grouped = channelsLast ? [0, -1, groups, c / groups] : [0, groups, -1];
  const axes = channelsLast ? [1, 3] : [2];
  e.add(onnxNode('Shape', [x], [`${tag}/shape`], `${tag}/Shape`));
  e.add(onnxNode('Reshape', [x, e.constant(`${P}/group_${grouped.join('_')}`, () => int64s(`${P}/group_${grouped.join('_')}`, grouped))], [`${tag}/x`], `${tag}/Reshape`));
  reduceMean(e, `${tag}/x`, axes, `${tag}/mean`, `${tag}/Mean`);
  e.add(onnxNode('Sub', [`${tag}/x`, `${tag}/mean`], [`${tag}/d`], `${tag}/Sub`));
  e.add(onnxNode('Mul', [`${tag}/d`, `${tag}/d`], [`${tag}/d2`], `${tag}/Square`));
  reduceMean(e, `${tag}/d2`, axes, `${tag}/var`, `${tag}/Var`);
  const eps = e.scalar(epsilon, x, `${tag}/eps`);
  e.add(onnxNode('Add', [`${tag}/var`, eps], [`${tag}/ve`], `${tag}/AddEps`));
  e.add(onnxNode('Sqrt', [`${tag}/ve`], [`${tag}/std`], `${tag}/Sqrt`));
  e.add(onnxNode('Div', [`${tag}/d`, `${tag}/std`], [`${tag}/n`], `${tag}/Div`));
  e.add(onnxNode('Reshape', [`${tag}/n`, `${tag}/shape`], [`${tag}/nx`], `${tag}/ReshapeBack`));
  let g = e.castLike(gamma, x, `${tag}/gammaT`);
  let b = e.castLike(beta, x, `${tag}/betaT`);
  if (!channelsLast) {
    // [C] -> [C, 1, 1] to broadcast over NCHW
    const cs = e.constant(`${P}/c11`, () => int64s(`${P}/c11`, [-1, 1, 1]));
    e.add(onnxNode('Reshape', [g, cs], [`${tag}/gamma`], `${tag}/GammaShape`));
    e.add(onnxNode('Reshape', [b, cs], [`${tag}/beta`], `${tag}/BetaShape`));
    g = `${tag}/gamma`;
    b = `${tag}/beta`;
  }
  e.add(onnxNode('Mul', [`${tag}/nx`, g], [`${tag}/scaled`], `${tag}/Scale`));
  if (!silu) {
    e.add(onnxNode('Add', [`${tag}/scaled`, b], [out], `${tag}/Shift`));
    return;
  }
  e.add(onnxNode('Add', [`${tag}/scaled`, b], [`${tag}/y`], `${tag}/Shift`));
  e.add(onnxNode('Sigmoid', [`${tag}/y`], [`${tag}/sig`], `${tag}/Sigmoid`));
  e.add(onnxNode('Mul', [`${tag}/y`, `${tag}/sig`], [out], `${tag}/SiLU`));
}

/** Emits the standard-op form of one com.microsoft node; false when it is not one this file lowers. */
function lowerNode(model: Uint8Array, n: NodeInfo, tag: string, e: Emit): boolean {
  switch (n.opType) {
    case 'NhwcConv': {
      // weights are NHWC too ([M, kH, kW, C/group]): back to [M, C/group, kH, kW]
      const [x, w, bias] = n.inputs;
      e.add(onnxNode('Transpose', [x], [`${tag}/x`], `${tag}/ToNCHW`, { perm: [0, 3, 1, 2] }));
      e.add(onnxNode('Transpose', [w], [`${tag}/w`], `${tag}/WeightToNCHW`, { perm: [0, 3, 1, 2] }));
      e.add(onnxNode('Conv', [`${tag}/x`, `${tag}/w`, ...(bias ? [bias] : [])], [`${tag}/y`], `${tag}/Conv`, {}, { rawAttributes: rawAttributes(model, n) }));
      e.add(onnxNode('Transpose', [`${tag}/y`], [n.outputs[0]], `${tag}/ToNHWC`, { perm: [0, 2, 3, 1] }));
      return true;
    }
    case 'GroupNorm': {
      const [x, gamma, beta] = n.inputs;
      groupNorm(e, tag, x, gamma, beta, n.outputs[0], n.ints.groups, n.floats.epsilon ?? 1e-5, n.ints.activation === 1, (n.ints.channels_last ?? 1) === 1);
      return true;
    }
    case 'SkipGroupNorm': {
      // inputs x, gamma, beta, skip, bias?; outputs y and (optional) the sum it normalised; channels last only
      const [x, gamma, beta, skip, bias] = n.inputs;
      const sum = n.outputs[1] || `${tag}/sum`;
      if (bias) {
        e.add(onnxNode('Add', [x, skip], [`${tag}/xs`], `${tag}/AddSkip`));
        e.add(onnxNode('Add', [`${tag}/xs`, bias], [sum], `${tag}/AddBias`));
      } else e.add(onnxNode('Add', [x, skip], [sum], `${tag}/AddSkip`));
      groupNorm(e, tag, sum, gamma, beta, n.outputs[0], n.ints.groups, n.floats.epsilon ?? 1e-5, n.ints.activation === 1, true);
      return true;
    }
    case 'BiasAdd': {
      const [x, bias, skip] = n.inputs;
      e.add(onnxNode('Add', [x, bias], [`${tag}/xb`], `${tag}/AddBias`));
      e.add(onnxNode('Add', [`${tag}/xb`, skip], [n.outputs[0]], `${tag}/AddSkip`));
      return true;
    }
    case 'BiasSplitGelu': {
      // (x + bias) split in halves on the last axis: left * Gelu(right), Gelu exact (Erf)
      const [x, bias] = n.inputs;
      e.add(onnxNode('Add', [x, bias], [`${tag}/xb`], `${tag}/AddBias`));
      if (e.opset >= 18) e.add(onnxNode('Split', [`${tag}/xb`], [`${tag}/a`, `${tag}/b`], `${tag}/Split`, { axis: -1, num_outputs: 2 }));
      else e.add(onnxNode('Split', [`${tag}/xb`], [`${tag}/a`, `${tag}/b`], `${tag}/Split`, { axis: -1 }));
      e.add(onnxNode('Mul', [`${tag}/b`, e.scalar(Math.SQRT1_2, x, `${tag}/rsqrt2`)], [`${tag}/bs`], `${tag}/Scale`));
      e.add(onnxNode('Erf', [`${tag}/bs`], [`${tag}/erf`], `${tag}/Erf`));
      e.add(onnxNode('Add', [`${tag}/erf`, e.scalar(1, x, `${tag}/one`)], [`${tag}/erf1`], `${tag}/AddOne`));
      e.add(onnxNode('Mul', [`${tag}/b`, `${tag}/erf1`], [`${tag}/g2`], `${tag}/MulB`));
      e.add(onnxNode('Mul', [`${tag}/g2`, e.scalar(0.5, x, `${tag}/half`)], [`${tag}/gelu`], `${tag}/Half`));
      e.add(onnxNode('Mul', [`${tag}/a`, `${tag}/gelu`], [n.outputs[0]], `${tag}/Gate`));
      return true;
    }
    case 'MultiHeadAttention': {
      // packed QKV [B, S, N, 3, H] (key and value absent) or packed KV [B, L, N, 2, H] (value absent): no provider
      // but CUDA runs them. Split the packed tensor on its axis 3 and flatten each part to [B, S, N*H], the
      // unpacked form every provider runs; attributes (num_heads, scale…) and the other inputs stay as they were.
      const [query, key, value, ...rest] = n.inputs;
      if (value) return false;
      const packed = key || query;
      const parts = key ? ['k', 'v'] : ['q', 'k', 'v'];
      const sizes = e.constant(`${P}/split_${parts.length}`, () => int64s(`${P}/split_${parts.length}`, parts.map(() => 1)));
      const flat = e.constant(`${P}/bs_flat`, () => int64s(`${P}/bs_flat`, [0, 0, -1]));
      e.add(onnxNode('Split', [packed, sizes], parts.map((p) => `${tag}/${p}5`), `${tag}/Split`, { axis: 3 }));
      for (const p of parts) e.add(onnxNode('Reshape', [`${tag}/${p}5`, flat], [`${tag}/${p}`], `${tag}/Flatten_${p}`));
      const unpacked = key ? [query, `${tag}/k`, `${tag}/v`] : [`${tag}/q`, `${tag}/k`, `${tag}/v`];
      const w = new Writer();
      for (const i of [...unpacked, ...rest]) w.string(NODE.input, i);
      for (const o of n.outputs) w.string(NODE.output, o);
      w.string(NODE.name, `${tag}/Attention`).string(NODE.opType, 'MultiHeadAttention');
      for (const r of rawAttributes(model, n)) w.raw(r);
      w.string(NODE.domain, MS);
      e.add(w);
      return true;
    }
    default:
      return false;
  }
}

function rewriteGraph(model: Uint8Array, replace: Map<number, (g: Writer) => void>, extra: Writer[]): Uint8Array {
  const gf = graphField(model);
  const graph = new Writer();
  let nodeIndex = 0;
  new Reader(model, gf.dataStart, gf.dataEnd).fields((f) => {
    if (f.field !== GRAPH.node || f.wire !== WIRE.LEN) {
      graph.raw(model.subarray(f.start, f.end));
      return;
    }
    const r = replace.get(nodeIndex++);
    if (r) r(graph);
    else graph.raw(model.subarray(f.start, f.end));
  });
  for (const t of extra) graph.message(GRAPH.initializer, t);
  const out = new Writer();
  for (const f of readFields(model)) {
    if (f.field === MODEL.graph && f.wire === WIRE.LEN) out.message(MODEL.graph, graph);
    else out.raw(model.subarray(f.start, f.end));
  }
  return out.finish();
}

/** Names of the main graph's outputs (GraphProto 12). */
function graphOutputs(model: Uint8Array): Set<string> {
  const g = graphField(model);
  const names = new Set<string>();
  new Reader(model, g.dataStart, g.dataEnd).fields((f) => {
    if (f.field !== 12 || f.wire !== WIRE.LEN) return;
    new Reader(model, f.dataStart, f.dataEnd).fields((v) => {
      if (v.field === 1) names.add(readString(model, v));
    });
  });
  return names;
}

/**
 * Folds Transpose(p) -> Transpose(q) where q undoes p: readers of the second
 * read the first's input. The first goes too when nothing else reads it.
 */
export function foldTransposes(model: Uint8Array): { model: Uint8Array; folded: number } {
  const nodes = graphNodes(model);
  const outputs = graphOutputs(model);
  const producer = new Map<string, number>();
  const readers = new Map<string, number>();
  nodes.forEach((n, i) => {
    n.outputs.forEach((t) => producer.set(t, i));
    n.inputs.forEach((t) => readers.set(t, (readers.get(t) ?? 0) + 1));
  });
  const perms = nodes.map((n) => (n.opType === 'Transpose' && n.domain === '' ? intsAttr(model, n, 'perm') : undefined));
  const rename = new Map<string, string>();
  const drop = new Set<number>();
  nodes.forEach((n, i) => {
    const q = perms[i];
    if (!q || outputs.has(n.outputs[0])) return;
    const p0 = producer.get(n.inputs[0]);
    const p = p0 === undefined ? undefined : perms[p0];
    if (p0 === undefined || !p || p.length !== q.length || !q.every((_, k) => p[q[k]] === k)) return;
    rename.set(n.outputs[0], nodes[p0].inputs[0]);
    drop.add(i);
    if (readers.get(n.inputs[0]) === 1 && !outputs.has(n.inputs[0])) drop.add(p0);
  });
  if (!drop.size) return { model, folded: 0 };
  const resolve = (t: string): string => {
    let r = t;
    while (rename.has(r)) r = rename.get(r)!;
    return r;
  };
  const replace = new Map<number, (g: Writer) => void>();
  nodes.forEach((n, i) => {
    if (drop.has(i)) replace.set(i, () => undefined);
    else if (n.inputs.some((t) => rename.has(t)))
      replace.set(i, (g) => {
        const w = new Writer();
        new Reader(model, n.field.dataStart, n.field.dataEnd).fields((f) => {
          if (f.field === NODE.input) w.string(NODE.input, resolve(readString(model, f)));
          else w.raw(model.subarray(f.start, f.end));
        });
        g.message(GRAPH.node, w);
      });
  });
  return { model: rewriteGraph(model, replace, []), folded: [...drop].filter((i) => perms[i]).length };
}

/**
 * Rewrites every operator the backend lacks and this file knows into standard
 * ONNX. Returns the input unchanged, `lowered` empty, when there is none.
 */
export function lowerForWeb(model: Uint8Array, backend: WebBackend): { model: Uint8Array; lowered: Record<string, number> } {
  const missing = new Set(Object.keys(opsToLower(model, backend)));
  if (!missing.size) return { model, lowered: {} };
  const nodes = graphNodes(model);
  const inits = graphInitializers(model);
  const channels = new Map(inits.map((t) => [t.name, t.dims.length === 1 ? t.dims[0] : undefined]));
  const constants = new Map<string, Writer>();
  const lowered: Record<string, number> = {};
  const replace = new Map<number, (g: Writer) => void>();
  const opset = defaultOpset(model);
  nodes.forEach((n, i) => {
    if (n.domain !== MS || !missing.has(n.opType)) return;
    if (n.opType === 'MultiHeadAttention' && !packedAttention(n)) return; // the unpacked form runs as it is
    replace.set(i, (g) => {
      const e: Emit = {
        add: (w) => g.message(GRAPH.node, w),
        constant: (name, make) => {
          if (!constants.has(name)) constants.set(name, make());
          return name;
        },
        opset,
        channels: (t) => channels.get(t),
        scalar: (v, like, out) => e.castLike(e.constant(`${P}/f32_${v}`, () => scalar(`${P}/f32_${v}`, v, ONNX_DTYPE.FLOAT)), like, out),
        castLike: (t, like, out) => {
          e.add(onnxNode('CastLike', [t, like], [out], `${out}/CastLike`));
          return out;
        },
      };
      lowerNode(model, n, `${P}${i}/${n.opType}`, e);
      lowered[n.opType] = (lowered[n.opType] ?? 0) + 1;
    });
  });
  const rewritten = rewriteGraph(model, replace, []);
  // the constants are known only once every node is emitted: a second, cheap pass appends them
  const withConstants = rewriteGraph(rewritten, new Map(), [...constants.values()]);
  return { model: foldTransposes(withConstants).model, lowered };
}
