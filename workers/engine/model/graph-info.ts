// What the loader needs to know about a serialized ONNX graph before handing
// it to onnxruntime: its weights' element types (fp16 needs `shader-f16`),
// where external weights live (file, offset, length), and its nodes (for the
// attention rewrite). A protobuf walk over ModelProto -> GraphProto: weight
// bytes are skipped by length, never copied, so it costs little even on a
// large inline graph.
import { readFields, readInt64, readString, Reader, WIRE, Writer, type Field } from './protobuf.ts';

/** TensorProto.DataType values the loader cares about. */
export const ONNX_DTYPE = { FLOAT: 1, INT64: 7, FLOAT16: 10, BFLOAT16: 16 } as const;

/** Field numbers of the ONNX messages read here (onnx.proto). */
export const MODEL = { graph: 7, opsetImport: 8 } as const;
export const GRAPH = { node: 1, initializer: 5 } as const;
export const NODE = { input: 1, output: 2, name: 3, opType: 4, attribute: 5, domain: 7 } as const;
export const ATTRIBUTE = { name: 1, f: 2, i: 3, t: 5, g: 6, graphs: 11, floats: 7, ints: 8, type: 20 } as const;
/** AttributeProto.AttributeType values written here. */
export const ATTRIBUTE_TYPE = { FLOAT: 1, INT: 2, INTS: 7 } as const;
export const TENSOR = { dims: 1, dataType: 2, name: 8, rawData: 9, externalData: 13, dataLocation: 14 } as const;

/** A node attribute: an int, a list of ints, or a float, said explicitly (a float that happens to be whole stays a float). */
export type AttributeValue = number | number[] | { float: number };

/**
 * A NodeProto for the graph rewrites (attention chunks and fusion, operator lowering): inputs, outputs,
 * name, op type, attributes, and optionally a domain and attributes copied raw from another node.
 */
export function onnxNode(opType: string, inputs: string[], outputs: string[], name: string, attrs: Record<string, AttributeValue> = {}, extra: { domain?: string; rawAttributes?: Uint8Array[] } = {}): Writer {
  const w = new Writer();
  for (const i of inputs) w.string(NODE.input, i);
  for (const o of outputs) w.string(NODE.output, o);
  w.string(NODE.name, name).string(NODE.opType, opType);
  for (const [k, v] of Object.entries(attrs)) {
    const a = new Writer().string(ATTRIBUTE.name, k);
    if (Array.isArray(v)) {
      for (const x of v) a.int(ATTRIBUTE.ints, x);
      a.int(ATTRIBUTE.type, ATTRIBUTE_TYPE.INTS);
    } else if (typeof v === 'number') a.int(ATTRIBUTE.i, v).int(ATTRIBUTE.type, ATTRIBUTE_TYPE.INT);
    else {
      const f = new Uint8Array(4);
      new DataView(f.buffer).setFloat32(0, v.float, true);
      a.raw(Uint8Array.of(ATTRIBUTE.f * 8 + WIRE.I32)).raw(f).int(ATTRIBUTE.type, ATTRIBUTE_TYPE.FLOAT);
    }
    w.message(NODE.attribute, a);
  }
  for (const r of extra.rawAttributes ?? []) w.raw(r);
  if (extra.domain) w.string(NODE.domain, extra.domain);
  return w;
}

export interface ExternalRef {
  location: string;
  offset: number;
  length: number;
}

export interface InitializerInfo {
  name: string;
  dataType: number;
  dims: number[];
  /** Present when the weights live in an external data file. */
  external?: ExternalRef;
}

function tensorInfo(buf: Uint8Array, start: number, end: number): InitializerInfo {
  const info: InitializerInfo = { name: '', dataType: 0, dims: [] };
  const ext: Record<string, string> = {};
  new Reader(buf, start, end).fields((f) => {
    if (f.field === TENSOR.dims && f.wire === WIRE.VARINT) info.dims.push(f.value);
    else if (f.field === TENSOR.dims && f.wire === WIRE.LEN) {
      const r = new Reader(buf, f.dataStart, f.dataEnd);
      while (r.pos < f.dataEnd) info.dims.push(r.varint());
    } else if (f.field === TENSOR.dataType) info.dataType = f.value;
    else if (f.field === TENSOR.name) info.name = readString(buf, f);
    else if (f.field === TENSOR.externalData) {
      let k = '';
      let v = '';
      new Reader(buf, f.dataStart, f.dataEnd).fields((e) => {
        if (e.field === 1) k = readString(buf, e);
        else if (e.field === 2) v = readString(buf, e);
      });
      ext[k] = v;
    }
  });
  if (ext.location !== undefined) info.external = { location: ext.location, offset: Number(ext.offset ?? 0), length: Number(ext.length ?? 0) };
  return info;
}

/** The GraphProto inside a ModelProto. Throws on a buffer that is not a ModelProto. */
export function graphField(model: Uint8Array): Field {
  const graph = readFields(model).find((f) => f.field === MODEL.graph && f.wire === WIRE.LEN);
  if (!graph) throw new Error('no graph in this file (not an ONNX model)');
  return graph;
}

/** Every initializer of the main graph, in order. Throws on a buffer that is not a ModelProto. */
export function graphInitializers(model: Uint8Array): InitializerInfo[] {
  const g = graphField(model);
  const out: InitializerInfo[] = [];
  new Reader(model, g.dataStart, g.dataEnd).fields((f) => {
    if (f.field === GRAPH.initializer && f.wire === WIRE.LEN) out.push(tensorInfo(model, f.dataStart, f.dataEnd));
  });
  return out;
}

export interface NodeInfo {
  name: string;
  opType: string;
  domain: string;
  inputs: string[];
  outputs: string[];
  /** Integer and float attributes by name (what the rewrites read). */
  ints: Record<string, number>;
  floats: Record<string, number>;
  /** An attribute holds a graph (If, Loop, Scan): what a rewrite of the main graph must leave alone. */
  subgraph: boolean;
  /** The NodeProto field in the model's buffer, to copy it unchanged. */
  field: Field;
}

/** A NodeProto field of `buf`: its names, wiring and scalar attributes. */
export function nodeInfo(buf: Uint8Array, f: Field): NodeInfo {
  const node: NodeInfo = { name: '', opType: '', domain: '', inputs: [], outputs: [], ints: {}, floats: {}, subgraph: false, field: f };
  new Reader(buf, f.dataStart, f.dataEnd).fields((n) => {
    if (n.field === NODE.input) node.inputs.push(readString(buf, n));
    else if (n.field === NODE.output) node.outputs.push(readString(buf, n));
    else if (n.field === NODE.name) node.name = readString(buf, n);
    else if (n.field === NODE.opType) node.opType = readString(buf, n);
    else if (n.field === NODE.domain) node.domain = readString(buf, n);
    else if (n.field === NODE.attribute) {
      let name = '';
      let i: number | undefined;
      let fl: number | undefined;
      new Reader(buf, n.dataStart, n.dataEnd).fields((a) => {
        if (a.field === ATTRIBUTE.name) name = readString(buf, a);
        else if (a.field === ATTRIBUTE.i && a.wire === WIRE.VARINT) i = readInt64(buf, a);
        else if (a.field === ATTRIBUTE.f && a.wire === WIRE.I32) fl = new DataView(buf.buffer, buf.byteOffset + a.start + 1, 4).getFloat32(0, true);
        else if (a.field === ATTRIBUTE.g || a.field === ATTRIBUTE.graphs) node.subgraph = true;
      });
      if (i !== undefined) node.ints[name] = i;
      if (fl !== undefined) node.floats[name] = fl;
    }
  });
  return node;
}

/** Every node of the main graph, in order. */
export function graphNodes(model: Uint8Array): NodeInfo[] {
  const g = graphField(model);
  const out: NodeInfo[] = [];
  new Reader(model, g.dataStart, g.dataEnd).fields((f) => {
    if (f.field === GRAPH.node && f.wire === WIRE.LEN) out.push(nodeInfo(model, f));
  });
  return out;
}

export interface GraphIo {
  name: string;
  kind: 'input' | 'output';
  elemType: number;
  /** The declared shape: a number per fixed axis, the axis' name (or '') per symbolic one. */
  dims: (number | string)[];
}

/** The main graph's inputs and outputs with element types and shapes (GraphProto 11 and 12: ValueInfoProto -> TypeProto.tensor_type -> elem_type, shape). */
export function graphIoTypes(model: Uint8Array): GraphIo[] {
  const g = graphField(model);
  const out: GraphIo[] = [];
  new Reader(model, g.dataStart, g.dataEnd).fields((f) => {
    if ((f.field !== 11 && f.field !== 12) || f.wire !== WIRE.LEN) return;
    let name = '';
    let elemType = 0;
    const dims: (number | string)[] = [];
    new Reader(model, f.dataStart, f.dataEnd).fields((v) => {
      if (v.field === 1) name = readString(model, v);
      else if (v.field === 2)
        new Reader(model, v.dataStart, v.dataEnd).fields((t) => {
          if (t.field === 1 && t.wire === WIRE.LEN)
            new Reader(model, t.dataStart, t.dataEnd).fields((e) => {
              if (e.field === 1 && e.wire === WIRE.VARINT) elemType = e.value;
              else if (e.field === 2 && e.wire === WIRE.LEN)
                new Reader(model, e.dataStart, e.dataEnd).fields((d) => {
                  if (d.field !== 1 || d.wire !== WIRE.LEN) return;
                  let dim: number | string = '';
                  new Reader(model, d.dataStart, d.dataEnd).fields((x) => {
                    if (x.field === 1 && x.wire === WIRE.VARINT) dim = x.value;
                    else if (x.field === 2) dim = readString(model, x);
                  });
                  dims.push(dim);
                });
            });
        });
    });
    out.push({ name, kind: f.field === 11 ? 'input' : 'output', elemType, dims });
  });
  return out;
}

/** Names of every node of the main graph, in order ('' where unnamed; torch exports name them after the module path: `/transformer_blocks.3/attn2/...`). */
export function graphNodeNames(model: Uint8Array): string[] {
  const g = graphField(model);
  const out: string[] = [];
  new Reader(model, g.dataStart, g.dataEnd).fields((f) => {
    if (f.field !== GRAPH.node || f.wire !== WIRE.LEN) return;
    let name = '';
    new Reader(model, f.dataStart, f.dataEnd).fields((n) => {
      if (n.field === NODE.name) name = readString(model, n);
    });
    out.push(name);
  });
  return out;
}

/** Dims of every Constant node's tensor value (torch.onnx folds buffers such as pos_embed's table into them). */
export function constantTensorDims(model: Uint8Array): { name: string; output: string; dims: number[] }[] {
  const out: { name: string; output: string; dims: number[] }[] = [];
  const g = graphField(model);
  new Reader(model, g.dataStart, g.dataEnd).fields((f) => {
    if (f.field !== GRAPH.node || f.wire !== WIRE.LEN) return;
    let name = '';
    let opType = '';
    let output = '';
    let dims: number[] | null = null;
    new Reader(model, f.dataStart, f.dataEnd).fields((n) => {
      if (n.field === NODE.name) name = readString(model, n);
      else if (n.field === NODE.opType) opType = readString(model, n);
      else if (n.field === NODE.output) output = readString(model, n);
      else if (n.field === NODE.attribute)
        new Reader(model, n.dataStart, n.dataEnd).fields((a) => {
          if (a.field === 5 && a.wire === WIRE.LEN) dims = tensorInfo(model, a.dataStart, a.dataEnd).dims; // AttributeProto.t
        });
    });
    if (opType === 'Constant' && dims) out.push({ name, output, dims });
  });
  return out;
}

/** What an MMDiT graph shows of its own architecture; a field is absent when the graph does not tell. */
export interface TransformerShapes {
  /** From pos_embed.proj.weight [hidden, in_channels, patch, patch]. */
  hiddenSize?: number;
  inChannels?: number;
  patchSize?: number;
  /** Side of the positional table pos_embed.pos_embed [1, side*side, hidden]. */
  posEmbedMaxSize?: number;
  /** Number of transformer_blocks. */
  depth?: number;
  /** Blocks with a second, image-only attention (MMDiT-X, SD3.5-medium). */
  dualAttentionLayers: number[];
  /** Attention with RMS-normed queries and keys (SD3.5). */
  qkNorm: boolean;
}

/**
 * Reads the architecture from initializer dims and from initializer and node
 * names (diffusers' module paths survive torch.onnx.export in both; an
 * optimizer may rename weights but keeps node names).
 */
export function transformerShapes(model: Uint8Array): TransformerShapes {
  const inits = graphInitializers(model);
  const nodeNames = graphNodeNames(model);
  const names = [...inits.map((t) => t.name), ...nodeNames];
  const shapes: TransformerShapes = { dualAttentionLayers: [], qkNorm: false };
  const proj = inits.find((t) => /(^|[./])pos_embed\.proj\.weight$/.test(t.name) && t.dims.length === 4);
  if (proj) [shapes.hiddenSize, shapes.inChannels, shapes.patchSize] = [proj.dims[0], proj.dims[1], proj.dims[2]];
  const square = (dims: number[]) => {
    const side = Math.round(Math.sqrt(dims.slice(0, -1).reduce((a, b) => a * b, 1)));
    return dims.length >= 3 && side > 1 && side * side === dims.slice(0, -1).reduce((a, b) => a * b, 1) && (shapes.hiddenSize === undefined || dims[dims.length - 1] === shapes.hiddenSize);
  };
  // the positional table: the pos_embed.pos_embed buffer, the same under a name torch.onnx made up
  // (`onnx::Slice_804`, read by a pos_embed node), or a constant it was folded into
  const posReads = new Set<string>();
  graphNodes(model).forEach((n, i) => {
    if (/pos_embed/.test(nodeNames[i])) for (const input of n.inputs) posReads.add(input);
  });
  const table =
    inits.find((t) => /(^|[./])pos_embed\.pos_embed$/.test(t.name) && t.dims.length >= 2) ??
    inits.find((t) => posReads.has(t.name) && square(t.dims)) ??
    constantTensorDims(model)
      .filter((c) => /pos_embed/.test(c.name) && square(c.dims))
      .sort((a, b) => b.dims.reduce((x, y) => x * y, 1) - a.dims.reduce((x, y) => x * y, 1))[0];
  if (table) {
    const hidden = table.dims[table.dims.length - 1];
    const positions = table.dims.slice(0, -1).reduce((a, b) => a * b, 1);
    shapes.posEmbedMaxSize = Math.round(Math.sqrt(positions));
    shapes.hiddenSize ??= hidden;
  }
  let depth = 0;
  const dual = new Set<number>();
  for (const n of names) {
    const block = /transformer_blocks[./](\d+)[./]/.exec(n);
    if (block) {
      const i = Number(block[1]);
      depth = Math.max(depth, i + 1);
      if (/transformer_blocks[./]\d+[./]attn2[./]/.test(n)) dual.add(i);
    }
    if (/[./]attn[./]norm_q[./]/.test(n)) shapes.qkNorm = true;
  }
  if (depth) shapes.depth = depth;
  shapes.dualAttentionLayers = [...dual].sort((a, b) => a - b);
  return shapes;
}

export interface GraphSummary {
  /** Distinct external data files the graph refers to, in order of first use. */
  externalLocations: string[];
  /** Whether any weight is stored in half precision (needs WebGPU's `shader-f16`). */
  halfPrecision: boolean;
  /** Whether an input or output is float16 (its casts need `shader-f16` on WebGPU too). */
  halfIO: boolean;
  /** Bytes of the largest weight: the most a streaming loader holds at once. */
  largestTensorBytes: number;
}

const ELEMENT_BYTES: Record<number, number> = { 1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2 };

/** What the loader checks before creating a session, from one walk over the graph. */
export function summarizeGraph(model: Uint8Array): GraphSummary {
  const inits = graphInitializers(model);
  return {
    externalLocations: [...new Set(inits.flatMap((t) => (t.external ? [t.external.location] : [])))],
    halfPrecision: inits.some((t) => t.dataType === ONNX_DTYPE.FLOAT16),
    halfIO: graphIoTypes(model).some((v) => v.elemType === ONNX_DTYPE.FLOAT16),
    largestTensorBytes: Math.max(0, ...inits.map((t) => t.external?.length ?? t.dims.reduce((a, b) => a * b, 1) * (ELEMENT_BYTES[t.dataType] ?? 4))),
  };
}

export const hasHalfPrecisionWeights = (model: Uint8Array): boolean => summarizeGraph(model).halfPrecision;

/** The default-domain opset the model imports (0 when it names none). */
export function defaultOpset(model: Uint8Array): number {
  let version = 0;
  for (const f of readFields(model)) {
    if (f.field !== MODEL.opsetImport || f.wire !== WIRE.LEN) continue;
    let domain = '';
    let v = 0;
    new Reader(model, f.dataStart, f.dataEnd).fields((o) => {
      if (o.field === 1) domain = readString(model, o);
      else if (o.field === 2) v = o.value;
    });
    if (domain === '' || domain === 'ai.onnx') version = v;
  }
  return version;
}
