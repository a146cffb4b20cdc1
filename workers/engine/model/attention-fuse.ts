// Decomposed attention fused into one com.microsoft.MultiHeadAttention per site,
// by rewriting the graph before onnxruntime sees it.
//
// torch.onnx and Optimum export attention as MatMul(Q, Kᵀ), a scale, Softmax,
// MatMul(·, V) over [B, N, S, H] heads: the score tensor B·N·S·T is made in
// full. onnxruntime's WebGPU MultiHeadAttention can run FlashAttention on
// adapters with the `subgroups` feature (head size a multiple of 4, batch 1,
// no bias), which never holds the scores; without it the fused kernel still
// saves the decomposed graph's separate dispatches. The sites are the ones
// attention-chunks.ts finds (findAttention), so a fused graph can be chunked
// afterwards the same way. Each decomposed site becomes:
//
//   Q [B,N,S,H] -Transpose(0,2,1,3)-Reshape(0,0,-1)-> [B,S,N·H]
//   Kᵀ[B,N,H,T] -Transpose(0,3,1,2)-Reshape(0,0,-1)-> [B,T,N·H]
//   V [B,N,T,H] -Transpose(0,2,1,3)-Reshape(0,0,-1)-> [B,T,N·H]
//   MultiHeadAttention(num_heads = N, scale = the site's) -> [B,S,N·H]
//   -Reshape(0,0,N,-1)-Transpose(0,2,1,3)-> the site's output [B,N,S,H]
//
// The transposes meet the export's own head split and merge, which
// onnxruntime's transpose optimizer cancels. The number of heads is read from
// the Reshape that split them (a constant shape, or a Concat of constants as
// torch.onnx emits); the scale from the scalar Mul/Div between the first
// MatMul and the Softmax (an Add of a scalar does not change a softmax). A site
// whose heads or scale cannot be read, or that casts between MatMul and
// Softmax, is left as it is. Fused sites are left whole; everything else is
// copied byte for byte.
import { findAttention, indexGraph, int64Tensor, rewriteSites, type AttentionSite, type GraphIndex } from './attention-chunks.ts';
import { ATTRIBUTE, graphField, onnxNode, GRAPH, MODEL, NODE, ONNX_DTYPE, TENSOR, type NodeInfo } from './graph-info.ts';
import { readFields, readInt64, readString, Reader, WIRE, Writer } from './protobuf.ts';

const MS_DOMAIN = 'com.microsoft';
const P = 'sd3webgpu_fuse';

/** Values of a TensorProto (float, float16, int32/int64 and double; raw or typed fields). */
function tensorValues(buf: Uint8Array, start: number, end: number): number[] | null {
  let type = 0;
  let raw: Uint8Array | null = null;
  const typed: number[] = [];
  new Reader(buf, start, end).fields((f) => {
    if (f.field === TENSOR.dataType) type = f.value;
    else if (f.field === TENSOR.rawData) raw = buf.slice(f.dataStart, f.dataEnd);
    else if (f.field === 4 && f.wire === WIRE.LEN) {
      const v = new DataView(buf.buffer, buf.byteOffset + f.dataStart, f.dataEnd - f.dataStart);
      for (let o = 0; o + 4 <= v.byteLength; o += 4) typed.push(v.getFloat32(o, true)); // float_data
    } else if (f.field === 4 && f.wire === WIRE.I32) typed.push(new DataView(buf.buffer, buf.byteOffset + f.start + 1, 4).getFloat32(0, true));
    else if ((f.field === 5 || f.field === 7) && f.wire === WIRE.VARINT) typed.push(readInt64(buf, f)); // int32_data / int64_data
    else if ((f.field === 5 || f.field === 7) && f.wire === WIRE.LEN) {
      const r = new Reader(buf, f.dataStart, f.dataEnd);
      while (r.pos < f.dataEnd) typed.push(r.varint());
    }
  });
  if (raw === null) return typed.length ? typed : null;
  const r = raw as Uint8Array;
  const v = new DataView(r.buffer, r.byteOffset, r.byteLength);
  const out: number[] = [];
  if (type === ONNX_DTYPE.FLOAT) for (let o = 0; o + 4 <= r.byteLength; o += 4) out.push(v.getFloat32(o, true));
  else if (type === ONNX_DTYPE.INT64) for (let o = 0; o + 8 <= r.byteLength; o += 8) out.push(Number(v.getBigInt64(o, true)));
  else if (type === 6) for (let o = 0; o + 4 <= r.byteLength; o += 4) out.push(v.getInt32(o, true)); // INT32
  else if (type === 11) for (let o = 0; o + 8 <= r.byteLength; o += 8) out.push(v.getFloat64(o, true)); // DOUBLE
  else if (type === ONNX_DTYPE.FLOAT16) for (let o = 0; o + 2 <= r.byteLength; o += 2) out.push(halfToFloat(v.getUint16(o, true)));
  else return null;
  return out;
}

function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** Values of every small constant (initializers and Constant nodes) by tensor name. */
function constants(model: Uint8Array, nodes: NodeInfo[]): Map<string, number[]> {
  const out = new Map<string, number[]>();
  const g = graphField(model);
  new Reader(model, g.dataStart, g.dataEnd).fields((f) => {
    if (f.field !== GRAPH.initializer || f.wire !== WIRE.LEN || f.dataEnd - f.dataStart > 4096) return;
    let name = '';
    new Reader(model, f.dataStart, f.dataEnd).fields((t) => {
      if (t.field === TENSOR.name) name = readString(model, t);
    });
    const v = tensorValues(model, f.dataStart, f.dataEnd);
    if (name && v) out.set(name, v);
  });
  for (const n of nodes) {
    if (n.opType !== 'Constant' || n.domain !== '' || n.field.dataEnd - n.field.dataStart > 4096) continue;
    new Reader(model, n.field.dataStart, n.field.dataEnd).fields((f) => {
      if (f.field !== NODE.attribute) return;
      new Reader(model, f.dataStart, f.dataEnd).fields((a) => {
        if (a.field !== ATTRIBUTE.t) return;
        const v = tensorValues(model, a.dataStart, a.dataEnd);
        if (v) out.set(n.outputs[0], v);
      });
    });
  }
  return out;
}

const THROUGH = new Set(['Transpose', 'Mul', 'Div', 'Concat', 'Cast', 'Add', 'Identity']);

/** Heads of a [B,N,S,H] tensor: the third entry of the shape of the Reshape that split them, found upstream. */
function headsOf(g: GraphIndex, values: Map<string, number[]>, tensor: string): number | null {
  let t = tensor;
  for (let depth = 0; depth < 8; depth++) {
    const p = g.producer.get(t);
    if (p === undefined) return null;
    const n = g.nodes[p];
    if (n.domain !== '') return null;
    if (n.opType === 'Reshape') {
      const shape = values.get(n.inputs[1]);
      if (shape) return shape.length === 4 && shape[2] > 0 ? shape[2] : null;
      const cat = g.producer.get(n.inputs[1]);
      const c = cat === undefined ? undefined : g.nodes[cat];
      if (!c || c.opType !== 'Concat' || c.inputs.length !== 4) return null;
      const v = values.get(c.inputs[2]);
      return v && v.length === 1 && v[0] > 0 ? v[0] : null;
    }
    if (!THROUGH.has(n.opType)) return null;
    // the operand that carries the tensor (not a scalar constant)
    const next = n.inputs.find((i) => i && !values.has(i));
    if (!next) return null;
    t = next;
  }
  return null;
}

/** What one decomposed site becomes: its heads, scale, and the tensors it reads and writes. */
interface FusePlan {
  site: AttentionSite;
  heads: number;
  scale: number;
  q: string;
  kt: string;
  v: string;
  out: string;
}

function planSite(g: GraphIndex, values: Map<string, number[]>, site: AttentionSite): FusePlan | null {
  if (site.kind !== 'decomposed') return null;
  const first = g.nodes[site.nodes[0]];
  const last = g.nodes[site.nodes[site.nodes.length - 1]];
  let scale = 1;
  for (const i of site.nodes.slice(1, -2)) {
    const n = g.nodes[i];
    const c = n.inputs.find((t) => values.has(t));
    const v = c ? values.get(c)! : undefined;
    if (n.opType === 'Cast' || !v || v.length !== 1) return null;
    if (n.opType === 'Mul') scale *= v[0];
    else if (n.opType === 'Div' && n.inputs[1] === c) scale /= v[0];
    else if (n.opType !== 'Add' && n.opType !== 'Sub') return null; // a shift: softmax ignores it
  }
  if (!Number.isFinite(scale) || scale === 0) return null;
  const heads = headsOf(g, values, first.inputs[0]) ?? headsOf(g, values, last.inputs[1]) ?? headsOf(g, values, first.inputs[1]);
  if (!heads) return null;
  return { site, heads, scale, q: first.inputs[0], kt: first.inputs[1], v: last.inputs[1], out: last.outputs[0] };
}

export interface FusedModel {
  model: Uint8Array;
  /** Decomposed sites fused into one MultiHeadAttention each. */
  fused: number;
  /** Decomposed sites left as they were (heads or scale not readable). */
  skipped: number;
}

/** Fuses every decomposed attention whose heads and scale it can read; the model unchanged when there is none. */
export function fuseAttention(model: Uint8Array): FusedModel {
  const sites = findAttention(model).filter((s) => s.kind === 'decomposed');
  if (!sites.length) return { model, fused: 0, skipped: 0 };
  const g = indexGraph(model);
  const values = constants(model, g.nodes);
  const plans = sites.map((s) => planSite(g, values, s)).filter((p): p is FusePlan => p !== null);
  if (!plans.length) return { model, fused: 0, skipped: sites.length };
  const headShapes = new Set<number>();

  const emit = (graph: Writer, p: FusePlan, id: number) => {
    const tag = `${P}${id}`;
    const add = (w: Writer) => graph.message(GRAPH.node, w);
    const bsd = (t: string, perm: number[], name: string) => {
      add(onnxNode('Transpose', [t], [`${tag}/${name}_t`], `${tag}/${name}/Transpose`, { perm }));
      add(onnxNode('Reshape', [`${tag}/${name}_t`, `${P}/bsd`], [`${tag}/${name}`], `${tag}/${name}/Reshape`));
      return `${tag}/${name}`;
    };
    const q = bsd(p.q, [0, 2, 1, 3], 'q');
    const k = bsd(p.kt, [0, 3, 1, 2], 'k');
    const v = bsd(p.v, [0, 2, 1, 3], 'v');
    add(onnxNode('MultiHeadAttention', [q, k, v], [`${tag}/o`], `${tag}/MultiHeadAttention`, { num_heads: p.heads, scale: { float: p.scale } }, { domain: MS_DOMAIN }));
    headShapes.add(p.heads);
    add(onnxNode('Reshape', [`${tag}/o`, `${P}/heads${p.heads}`], [`${tag}/o_r`], `${tag}/o/Reshape`));
    add(onnxNode('Transpose', [`${tag}/o_r`], [p.out], `${tag}/o/Transpose`, { perm: [0, 2, 1, 3] }));
  };

  const graph = rewriteSites(model, plans, (p) => p.site.nodes, emit);
  graph.message(GRAPH.initializer, int64Tensor(`${P}/bsd`, [0, 0, -1]));
  for (const h of headShapes) graph.message(GRAPH.initializer, int64Tensor(`${P}/heads${h}`, [0, 0, h, -1]));

  // MultiHeadAttention lives in com.microsoft: the model must import that domain
  let hasMs = false;
  const out = new Writer();
  for (const f of readFields(model)) {
    if (f.field === MODEL.opsetImport && f.wire === WIRE.LEN) {
      new Reader(model, f.dataStart, f.dataEnd).fields((o) => {
        if (o.field === 1 && readString(model, o) === MS_DOMAIN) hasMs = true;
      });
    }
  }
  for (const f of readFields(model)) {
    if (f.field === MODEL.graph && f.wire === WIRE.LEN) out.message(MODEL.graph, graph);
    else out.raw(model.subarray(f.start, f.end));
  }
  if (!hasMs) out.message(MODEL.opsetImport, new Writer().string(1, MS_DOMAIN).int(2, 1));
  return { model: out.finish(), fused: plans.length, skipped: sites.length - plans.length };
}
