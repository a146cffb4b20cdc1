// Attention in query chunks, by rewriting the graph before onnxruntime sees it.
//
// A decomposed attention (MatMul, scale, Softmax, MatMul: what torch.onnx and
// Optimum export) materialises one score tensor of heads x S x T per image
// row: at 1024² in SD3 that is 1.75 GiB in fp32, over the 1 GiB that many
// WebGPU adapters allow in one buffer. Each query row's softmax depends on
// that row alone, so the same result comes from k slices of the queries, each
// with its own k-times-smaller score tensor, concatenated back. The rewrite
// does exactly that for every attention it recognises, decomposed or fused
// (com.microsoft.MultiHeadAttention, as Olive exports carry it), and leaves
// everything else byte for byte. Chunks are balanced (sizes differ by at most
// one) and computed in the graph from the actual sequence length, so one
// rewritten graph serves every image size.
import { defaultOpset, graphField, graphInitializers, graphNodes, onnxNode, GRAPH, MODEL, NODE, ONNX_DTYPE, TENSOR, type NodeInfo } from './graph-info.ts';
import { readFields, readString, Reader, WIRE, Writer, type Field } from './protobuf.ts';

export interface AttentionSite {
  kind: 'decomposed' | 'fused';
  /** Node indices this site replaces; the rewrite is emitted where the last one stood. */
  nodes: number[];
  /** The tensor whose axis -2 holds the queries. */
  query: string;
}

const ELEMENTWISE = new Set(['Mul', 'Div', 'Add', 'Sub', 'Cast']);
const MS_DOMAIN = 'com.microsoft';

export interface GraphIndex {
  nodes: NodeInfo[];
  /** Tensor -> indices of the nodes that read it. */
  consumers: Map<string, number[]>;
  producer: Map<string, number>;
  graphOutputs: Set<string>;
  /** Constants (initializers, Constant nodes) with one element: safe to reuse in every chunk. */
  scalars: Set<string>;
}

export function indexGraph(model: Uint8Array): GraphIndex {
  const nodes = graphNodes(model);
  const consumers = new Map<string, number[]>();
  const producer = new Map<string, number>();
  nodes.forEach((n, i) => {
    for (const t of n.inputs) if (t) consumers.set(t, [...(consumers.get(t) ?? []), i]);
    for (const t of n.outputs) producer.set(t, i);
  });
  const g = graphField(model);
  const graphOutputs = new Set<string>();
  new Reader(model, g.dataStart, g.dataEnd).fields((f) => {
    if (f.field !== 12 || f.wire !== WIRE.LEN) return; // GraphProto.output: ValueInfoProto, name = 1
    new Reader(model, f.dataStart, f.dataEnd).fields((v) => {
      if (v.field === 1) graphOutputs.add(readString(model, v));
    });
  });
  const scalars = new Set(graphInitializers(model).filter((t) => t.dims.reduce((a, b) => a * b, 1) === 1).map((t) => t.name));
  for (const n of nodes) if (n.opType === 'Constant' && constantElements(model, n) === 1) scalars.add(n.outputs[0]);
  return { nodes, consumers, producer, graphOutputs, scalars };
}

/** Elements of a Constant node's `value` tensor (other forms count as not scalar). */
function constantElements(model: Uint8Array, n: NodeInfo): number {
  let count = -1;
  new Reader(model, n.field.dataStart, n.field.dataEnd).fields((f) => {
    if (f.field !== NODE.attribute) return;
    new Reader(model, f.dataStart, f.dataEnd).fields((a) => {
      if (a.field !== 5) return; // AttributeProto.t
      let dims = 1;
      new Reader(model, a.dataStart, a.dataEnd).fields((t) => {
        if (t.field === TENSOR.dims && t.wire === WIRE.VARINT) dims *= t.value;
        else if (t.field === TENSOR.dims && t.wire === WIRE.LEN) {
          const r = new Reader(model, t.dataStart, t.dataEnd);
          while (r.pos < t.dataEnd) dims *= r.varint();
        }
      });
      count = dims;
    });
  });
  return count;
}

/** A tensor read by exactly one node and not a graph output: its producer may be replaced. */
const private_ = (g: GraphIndex, t: string, reader: number) => !g.graphOutputs.has(t) && g.consumers.get(t)?.length === 1 && g.consumers.get(t)![0] === reader;

/** Every attention the rewrite can chunk, in graph order. */
export function findAttention(model: Uint8Array): AttentionSite[] {
  // before opset 13 Softmax flattens to 2-D around its axis: not the per-row softmax this relies on
  if (defaultOpset(model) < 13) return [];
  const g = indexGraph(model);
  const sites: AttentionSite[] = [];
  g.nodes.forEach((n, i) => {
    if (n.domain === MS_DOMAIN && n.opType === 'MultiHeadAttention') {
      // plain q, k, v in [B,S,D]: no bias, padding mask, attention bias or cache, one output
      const extra = n.inputs.slice(3).some(Boolean);
      if (!extra && n.inputs.length >= 3 && n.outputs.filter(Boolean).length === 1) sites.push({ kind: 'fused', nodes: [i], query: n.inputs[0] });
      return;
    }
    if (n.domain !== '' || n.opType !== 'Softmax') return;
    const axis = n.ints.axis ?? -1;
    if (axis !== -1 && axis !== 3) return;
    const readers = g.consumers.get(n.outputs[0]) ?? [];
    const second = readers.length === 1 ? g.nodes[readers[0]] : undefined;
    if (!second || second.opType !== 'MatMul' || second.domain !== '' || second.inputs[0] !== n.outputs[0] || !private_(g, n.outputs[0], readers[0])) return;
    // back from the softmax through elementwise ops whose other operand is a scalar constant
    const chain: number[] = [];
    let t = n.inputs[0];
    let reader = i;
    for (;;) {
      const p = g.producer.get(t);
      if (p === undefined || !private_(g, t, reader)) return;
      const pn = g.nodes[p];
      if (pn.domain === '' && pn.opType === 'MatMul') {
        sites.push({ kind: 'decomposed', nodes: [p, ...chain, i, readers[0]], query: pn.inputs[0] });
        return;
      }
      if (pn.domain !== '' || !ELEMENTWISE.has(pn.opType)) return;
      let next: string;
      if (pn.opType === 'Cast') next = pn.inputs[0];
      else if (pn.inputs.length === 2 && g.scalars.has(pn.inputs[1])) next = pn.inputs[0];
      else if (pn.inputs.length === 2 && g.scalars.has(pn.inputs[0]) && (pn.opType === 'Mul' || pn.opType === 'Add')) next = pn.inputs[1];
      else return;
      chain.unshift(p);
      reader = p;
      t = next;
    }
  });
  return sites;
}

/** A node from the original graph with tensors and name renamed (attributes and domain copied raw). */
export function renamedNode(model: Uint8Array, n: NodeInfo, rename: (t: string) => string, suffix: string): Writer {
  const w = new Writer();
  new Reader(model, n.field.dataStart, n.field.dataEnd).fields((f: Field) => {
    if (f.field === NODE.input || f.field === NODE.output) w.string(f.field, rename(readString(model, f)));
    else if (f.field === NODE.name) w.string(NODE.name, `${readString(model, f)}${suffix}`);
    else w.raw(model.subarray(f.start, f.end));
  });
  return w;
}

export function int64Tensor(name: string, values: number[]): Writer {
  const raw = new Uint8Array(new BigInt64Array(values.map(BigInt)).buffer);
  return new Writer().int(TENSOR.dims, values.length).int(TENSOR.dataType, ONNX_DTYPE.INT64).string(TENSOR.name, name).bytes(TENSOR.rawData, raw);
}

/**
 * The graph with each site's nodes left out and, where the last of them stood, what `emit` writes in
 * their place (its second argument counts the sites, for unique names); every other field byte for byte.
 */
export function rewriteSites<T>(model: Uint8Array, sites: T[], nodesOf: (site: T) => number[], emit: (graph: Writer, site: T, id: number) => void): Writer {
  const replaced = new Set(sites.flatMap(nodesOf));
  const emitAt = new Map(sites.map((s) => [Math.max(...nodesOf(s)), s]));
  const gf = graphField(model);
  const graph = new Writer();
  let nodeIndex = 0;
  let siteId = 0;
  new Reader(model, gf.dataStart, gf.dataEnd).fields((f) => {
    if (f.field !== GRAPH.node || f.wire !== WIRE.LEN) {
      graph.raw(model.subarray(f.start, f.end));
      return;
    }
    const i = nodeIndex++;
    const site = emitAt.get(i);
    if (site) emit(graph, site, siteId++);
    else if (!replaced.has(i)) graph.raw(model.subarray(f.start, f.end));
  });
  return graph;
}

export interface ChunkedModel {
  model: Uint8Array;
  /** Attention sites rewritten. */
  sites: number;
}

/** Rewrites every recognised attention to run in `chunks` query chunks. chunks <= 1 or no site: the model unchanged. */
export function chunkAttention(model: Uint8Array, chunks: number): ChunkedModel {
  const sites = chunks > 1 ? findAttention(model) : [];
  if (!sites.length) return { model, sites: 0 };
  const { nodes } = indexGraph(model);
  const P = 'sd3webgpu_chunk';
  const k = chunks;

  const emit = (g: Writer, site: AttentionSite, id: number) => {
    const tag = `${P}${id}`;
    const add = (w: Writer) => g.message(GRAPH.node, w);
    // balanced chunk bounds from the live sequence length: start_i = floor(i * S / k)
    add(onnxNode('Shape', [site.query], [`${tag}/shape`], `${tag}/Shape`));
    add(onnxNode('Gather', [`${tag}/shape`, `${P}/axis`], [`${tag}/S`], `${tag}/Gather`, { axis: 0 }));
    const bound = (i: number) => (i === 0 ? `${P}/zero` : i === k ? `${tag}/S` : `${tag}/b${i}`);
    for (let i = 1; i < k; i++) {
      add(onnxNode('Mul', [`${tag}/S`, `${P}/i${i}`], [`${tag}/m${i}`], `${tag}/Mul${i}`));
      add(onnxNode('Div', [`${tag}/m${i}`, `${P}/k`], [`${tag}/b${i}`], `${tag}/Div${i}`));
    }
    const outs: string[] = [];
    for (let i = 0; i < k; i++) {
      const q = `${tag}/q${i}`;
      add(onnxNode('Slice', [site.query, bound(i), bound(i + 1), `${P}/axis`], [q], `${tag}/Slice${i}`));
      const last = nodes[site.nodes[site.nodes.length - 1]];
      const out = `${last.outputs[0]}/chunk${i}`;
      // every node of the site again, on this chunk: the query renamed, intermediates suffixed
      const mine = new Set(site.nodes.flatMap((n) => nodes[n].outputs));
      const rename = (t: string) => (t === site.query ? q : t === last.outputs[0] ? out : mine.has(t) ? `${t}/chunk${i}` : t);
      for (const n of site.nodes) add(renamedNode(model, nodes[n], rename, `/chunk${i}`));
      outs.push(out);
    }
    add(onnxNode('Concat', outs, [nodes[site.nodes[site.nodes.length - 1]].outputs[0]], `${tag}/Concat`, { axis: -2 }));
  };

  const graph = rewriteSites(model, sites, (s) => s.nodes, emit);
  graph.message(GRAPH.initializer, int64Tensor(`${P}/axis`, [-2]));
  graph.message(GRAPH.initializer, int64Tensor(`${P}/zero`, [0]));
  graph.message(GRAPH.initializer, int64Tensor(`${P}/k`, [k]));
  for (let i = 1; i < k; i++) graph.message(GRAPH.initializer, int64Tensor(`${P}/i${i}`, [i]));

  const out = new Writer();
  for (const f of readFields(model)) {
    if (f.field === MODEL.graph && f.wire === WIRE.LEN) out.message(MODEL.graph, graph);
    else out.raw(model.subarray(f.start, f.end));
  }
  return { model: out.finish(), sites: sites.length };
}

