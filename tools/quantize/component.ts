// One component's graph quantized: every MatMul (and Gemm) whose weight is a
// constant 2-D fp32/fp16 initializer becomes com.microsoft.MatMulNBits with
// the weight packed block-wise (blockwise.ts), unless the rules keep it. The
// graph is read in place (onnx-file.ts): nodes and tensor headers are parsed,
// weights are read one at a time when they are quantized, and every other
// weight is copied through in chunks. Tensors of 1 KiB or more go to external
// data (`model.onnx_data`, 64-byte aligned, as onnx's save_model and the
// project's builder write it); the graph keeps the rest.
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { staysInFolder } from '../../workers/engine/model/confine.ts';
import { fromHalf } from '../../workers/engine/model/float16.ts';
import { ATTRIBUTE, GRAPH, MODEL, NODE, nodeInfo, onnxNode, ONNX_DTYPE, TENSOR, type AttributeValue, type NodeInfo } from '../../workers/engine/model/graph-info.ts';
import { Reader, readString, WIRE, Writer } from '../../workers/engine/model/protobuf.ts';
import { quantizeBlockwise, transpose, type Bits, type BlockwiseQuantized } from './blockwise.ts';
import { InputFile, OutputFile, Parts, walkFields, type FileField, type FileRange } from './onnx-file.ts';

export const MS_DOMAIN = 'com.microsoft';
/** onnx's save_model default: smaller tensors stay inside the graph. */
const EXTERNAL_THRESHOLD = 1024;
const ALIGN = 64;
/** Nodes and tensor header fields up to this size are read and parsed; larger ones are copied through unread. */
const READ_LIMIT = 1 << 20;
const UINT8 = 2;
/** TensorProto fields holding element data other than raw_data: float_data, int32_data, string_data, int64_data, double_data, uint64_data. */
const TYPED_PAYLOAD = new Set([4, 5, 6, 7, 10, 11]);
const FLOAT_DATA = 4;
const ENTRY = { key: 1, value: 2 } as const;
const DATA_LOCATION_EXTERNAL = 1;

export interface ComponentOptions {
  bits: Bits;
  block: number;
  /** Weights whose node or initializer name matches stay as they are (null: none). */
  keep: RegExp | null;
  /** Weights with fewer rows (K) stay. */
  minK: number;
  /** MatMulNBits' accuracy_level; left out when undefined. */
  accuracyLevel?: number;
  /** Split the external data into files of at most this many bytes (`model.onnx_data.000`, …). */
  shardBytes?: number;
}

export interface QuantizedNode {
  node: string;
  op: 'MatMul' | 'Gemm';
  weight: string;
  K: number;
  N: number;
  /** The original weight is stored [N, K] (Gemm transB). */
  transposed: boolean;
  /** The MatMulNBits node and its initializers B, scales, zero_points. */
  nbits: { node: string; b: string; scales: string; zeroPoints: string };
}

/** Why a weight stayed: the keep pattern, too few rows, or a node or weight the operator cannot take. */
export type KeptRule = 'pattern' | 'small' | 'unsupported';

export interface KeptNode {
  rule: KeptRule;
  node: string;
  op: string;
  weight: string;
  K?: number;
  N?: number;
  reason: string;
}

export interface ComponentReport {
  component: string;
  quantized: QuantizedNode[];
  kept: KeptNode[];
  /** model.onnx and the external data it names, in the input and the output. */
  bytesBefore: number;
  bytesAfter: number;
  /** Weight values now held in bits. */
  parametersQuantized: number;
  /** The output's files, relative to the component folder. */
  files: string[];
  /** The input's external data files, relative to its folder (a copy of the rest of the folder leaves them out). */
  inputDataFiles: string[];
}

/** graph-info's NodeInfo, its field's positions in the file, and its bytes where it was small enough to read. */
type NodeRec = Omit<NodeInfo, 'field'> & { field: FileField; bytes?: Uint8Array };

interface TensorRec {
  field: FileField;
  name: string;
  dims: number[];
  dataType: number;
  /** Fields copied into a rewritten header: all but the payload and the external-data ones. */
  header: FileField[];
  /** raw_data or a typed payload inside the graph. */
  payload?: { field: number; range: FileRange };
  external?: { location: string; offset: number; length?: number };
}

interface Plan {
  node: NodeRec;
  op: 'MatMul' | 'Gemm';
  weight: TensorRec;
  K: number;
  N: number;
  /** The stored weight is [N, K] (Gemm transB). */
  transposed: boolean;
  /** Gemm's C, added after. */
  bias?: string;
  names: { b: string; scales: string; zeroPoints: string };
}

const FLOAT_TYPES: Record<number, string> = { [ONNX_DTYPE.FLOAT]: 'float32', [ONNX_DTYPE.FLOAT16]: 'float16' };
const TYPE_NAMES: Record<number, string> = { 1: 'float32', 2: 'uint8', 3: 'int8', 6: 'int32', 7: 'int64', 10: 'float16', 11: 'float64', 16: 'bfloat16' };

function readNode(file: InputFile, f: FileField): NodeRec {
  const node: NodeRec = { field: f, name: '', opType: '', domain: '', inputs: [], outputs: [], ints: {}, floats: {}, subgraph: false };
  const small = f.end - f.start <= READ_LIMIT;
  if (small) {
    // the whole field (key included) to copy; its payload parsed with protobuf.ts
    node.bytes = file.read(f.start, f.end - f.start);
    const buf = node.bytes;
    const body = f.dataStart - f.start;
    // graph-info's reader, on the field's own bytes: positions relative to them
    const { field: _, ...info } = nodeInfo(buf, { ...f, start: 0, end: buf.length, dataStart: body, dataEnd: buf.length });
    Object.assign(node, info);
    return node;
  }
  // a large node (a Constant holding a folded buffer): its names, and whether it has a subgraph
  const str = (g: FileField) => new TextDecoder().decode(file.view(g.dataStart, g.dataEnd - g.dataStart));
  walkFields(file, f.dataStart, f.dataEnd, (n) => {
    if (n.field === NODE.input) node.inputs.push(str(n));
    else if (n.field === NODE.output) node.outputs.push(str(n));
    else if (n.field === NODE.name) node.name = str(n);
    else if (n.field === NODE.opType) node.opType = str(n);
    else if (n.field === NODE.domain) node.domain = str(n);
    else if (n.field === NODE.attribute) walkFields(file, n.dataStart, n.dataEnd, (a) => void ((a.field === ATTRIBUTE.g || a.field === ATTRIBUTE.graphs) && (node.subgraph = true)));
  });
  return node;
}

function readTensor(file: InputFile, f: FileField): TensorRec {
  const t: TensorRec = { field: f, name: '', dims: [], dataType: 0, header: [] };
  const ext: Record<string, string> = {};
  const bytes = (g: FileField) => file.view(g.dataStart, g.dataEnd - g.dataStart);
  walkFields(file, f.dataStart, f.dataEnd, (g) => {
    if (g.field === TENSOR.rawData || TYPED_PAYLOAD.has(g.field)) {
      t.payload = { field: g.field, range: file.range(g.dataStart, g.dataEnd) };
      return;
    }
    if (g.field === TENSOR.externalData && g.wire === WIRE.LEN) {
      const b = bytes(g).slice();
      let k = '';
      let v = '';
      new Reader(b).fields((e) => {
        if (e.field === ENTRY.key) k = readString(b, e);
        else if (e.field === ENTRY.value) v = readString(b, e);
      });
      ext[k] = v;
      return;
    }
    if (g.field === TENSOR.dataLocation) return;
    t.header.push(g);
    if (g.field === TENSOR.dims && g.wire === WIRE.VARINT) t.dims.push(g.value);
    else if (g.field === TENSOR.dims && g.wire === WIRE.LEN) {
      const b = bytes(g).slice();
      const r = new Reader(b);
      while (r.pos < b.length) t.dims.push(r.varint());
    } else if (g.field === TENSOR.dataType) t.dataType = g.value;
    else if (g.field === TENSOR.name) t.name = new TextDecoder().decode(bytes(g));
  });
  if (ext.location !== undefined) t.external = { location: ext.location, offset: Number(ext.offset ?? 0), length: ext.length === undefined ? undefined : Number(ext.length) };
  return t;
}

/** ValueInfoProto's name. */
function valueName(file: InputFile, f: FileField): string {
  let name = '';
  walkFields(file, f.dataStart, f.dataEnd, (v) => {
    if (v.field === 1 && v.wire === WIRE.LEN) name = new TextDecoder().decode(file.view(v.dataStart, v.dataEnd - v.dataStart));
  });
  return name;
}

/** External data written as onnx lays it out: tensors whole, 64-byte aligned, optionally in shards. */
class ExternalSink {
  private out: OutputFile | null = null;
  private shard = -1;
  private location = '';
  readonly files: string[] = [];

  constructor(
    private readonly folder: string,
    private readonly base: string,
    private readonly shardBytes?: number,
  ) {}

  private next(): void {
    this.out?.close();
    this.shard++;
    this.location = this.shardBytes ? `${this.base}.${String(this.shard).padStart(3, '0')}` : this.base;
    this.files.push(this.location);
    this.out = new OutputFile(join(this.folder, this.location));
  }

  private place(length: number, write: (o: OutputFile) => void): { location: string; offset: number; length: number } {
    if (!this.out || (this.shardBytes && this.out.pos > 0 && this.out.pos + length > this.shardBytes)) this.next();
    const o = this.out!;
    const offset = o.pos;
    write(o);
    if (o.pos - offset !== length) throw new Error(`wrote ${o.pos - offset} bytes where ${length} were planned`);
    o.pad((ALIGN - (o.pos % ALIGN)) % ALIGN);
    return { location: this.location, offset, length };
  }

  bytes(b: Uint8Array) {
    return this.place(b.byteLength, (o) => o.write(b));
  }

  copy(r: FileRange) {
    return this.place(r.length, (o) => o.copy(r));
  }

  close(): void {
    this.out?.close();
    this.out = null;
  }
}

const u8 = (a: Float32Array | Uint16Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** Quantizes `inDir/model.onnx` (and its external data) into `outDir`, which exists. */
export function quantizeComponent(component: string, inDir: string, outDir: string, opts: ComponentOptions): ComponentReport {
  const graphPath = join(inDir, 'model.onnx');
  const file = new InputFile(graphPath);
  const dataFiles = new Map<string, InputFile>();
  const sink = new ExternalSink(outDir, 'model.onnx_data', opts.shardBytes);
  try {
    // pass 1: the model's fields, the graph's nodes, initializers, inputs and outputs
    const top: FileField[] = [];
    walkFields(file, 0, file.size, (f) => top.push(f));
    const graphField = top.find((f) => f.field === MODEL.graph && f.wire === WIRE.LEN);
    if (!graphField) throw new Error(`${graphPath}: no graph in this file (not an ONNX model)`);
    const entries: ({ kind: 'node'; node: NodeRec } | { kind: 'init'; tensor: TensorRec } | { kind: 'other'; field: FileField })[] = [];
    const inits = new Map<string, TensorRec>();
    const graphInputs = new Set<string>();
    const graphOutputs = new Set<string>();
    const names = new Set<string>();
    walkFields(file, graphField.dataStart, graphField.dataEnd, (f) => {
      if (f.field === GRAPH.node && f.wire === WIRE.LEN) {
        const node = readNode(file, f);
        entries.push({ kind: 'node', node });
        for (const o of node.outputs) names.add(o);
        if (node.name) names.add(node.name);
      } else if (f.field === GRAPH.initializer && f.wire === WIRE.LEN) {
        const tensor = readTensor(file, f);
        entries.push({ kind: 'init', tensor });
        inits.set(tensor.name, tensor);
        names.add(tensor.name);
      } else {
        if (f.field === 11 || f.field === 12) (f.field === 11 ? graphInputs : graphOutputs).add(valueName(file, f));
        entries.push({ kind: 'other', field: f });
      }
    });
    for (const n of [...graphInputs, ...graphOutputs]) names.add(n);
    const nodes = entries.flatMap((e) => (e.kind === 'node' ? [e.node] : []));
    const hasSubgraph = nodes.some((n) => n.subgraph);

    // which weights become MatMulNBits
    const suffix = `_Q${opts.bits}`;
    const fresh = (base: string) => {
      let name = base;
      for (let i = 1; names.has(name); i++) name = `${base}_${i}`;
      names.add(name);
      return name;
    };
    const byWeight = new Map<string, Plan['names'] & { transposed: boolean }>();
    const plans = new Map<NodeRec, Plan>();
    const kept: KeptNode[] = [];
    for (const node of nodes) {
      if ((node.domain !== '' && node.domain !== 'ai.onnx') || (node.opType !== 'MatMul' && node.opType !== 'Gemm')) continue;
      const op = node.opType;
      const w = inits.get(node.inputs[1]);
      if (!w) continue; // activations times activations (attention): not a weight
      const keep = (reason: string, K?: number, N?: number, rule: KeptRule = 'unsupported') => kept.push({ rule, node: node.name, op, weight: w.name, K, N, reason });
      if (graphInputs.has(w.name)) {
        keep('its weight is also a graph input (a caller may replace it)');
        continue;
      }
      if (w.dims.length !== 2) {
        keep(`its weight is ${w.dims.length}-D [${w.dims.join(', ')}], not 2-D`);
        continue;
      }
      if (!FLOAT_TYPES[w.dataType]) {
        keep(`its weight is ${TYPE_NAMES[w.dataType] ?? `type ${w.dataType}`}, not float32 or float16`);
        continue;
      }
      const stored = w.external || (w.payload && (w.payload.field === TENSOR.rawData || (w.payload.field === FLOAT_DATA && w.dataType === ONNX_DTYPE.FLOAT)));
      if (!stored) {
        keep('its weight has no raw data');
        continue;
      }
      const transposed = op === 'Gemm' && !!node.ints.transB;
      const [K, N] = transposed ? [w.dims[1], w.dims[0]] : [w.dims[0], w.dims[1]];
      if (op === 'Gemm') {
        if (node.ints.transA) {
          keep('Gemm with transA', K, N);
          continue;
        }
        if ((node.floats.alpha ?? 1) !== 1 || (node.inputs[2] && (node.floats.beta ?? 1) !== 1)) {
          keep('Gemm with alpha or beta other than 1', K, N);
          continue;
        }
      }
      if (opts.keep && (opts.keep.test(node.name) || opts.keep.test(w.name))) {
        keep(`kept in its own precision (matches ${opts.keep.source})`, K, N, 'pattern');
        continue;
      }
      if (K < opts.minK) {
        keep(`K ${K} is under ${opts.minK}`, K, N, 'small');
        continue;
      }
      let q = byWeight.get(w.name);
      if (q && q.transposed !== transposed) {
        keep('its weight is also read the other way round by another node', K, N);
        continue;
      }
      if (!q) {
        q = { b: fresh(`${w.name}${suffix}`), scales: fresh(`${w.name}_scales`), zeroPoints: fresh(`${w.name}_zero_points`), transposed };
        byWeight.set(w.name, q);
      }
      plans.set(node, { node, op, weight: w, K, N, transposed, bias: op === 'Gemm' && node.inputs[2] ? node.inputs[2] : undefined, names: q });
    }

    // an original weight goes when nothing but its MatMulNBits reads it
    const readers = new Map<string, number>();
    for (const n of nodes) if (!plans.has(n)) for (const i of n.inputs) readers.set(i, (readers.get(i) ?? 0) + 1);
    const dropped = new Set([...byWeight.keys()].filter((w) => !hasSubgraph && !readers.get(w) && !graphOutputs.has(w)));

    // pass 2: the output graph, weights into the external data as they come
    const dataOf = (location: string): InputFile => {
      if (!staysInFolder(location)) throw new Error(`${graphPath}: its external data location "${location}" is outside the model folder; refused`);
      let f = dataFiles.get(location);
      if (!f) {
        const path = join(inDir, location);
        if (!existsSync(path)) throw new Error(`${graphPath}: its external data ${location} is missing`);
        f = new InputFile(path);
        dataFiles.set(location, f);
      }
      return f;
    };
    const payloadRange = (t: TensorRec): FileRange => {
      if (t.payload) return t.payload.range;
      const d = dataOf(t.external!.location);
      const length = t.external!.length ?? d.size - t.external!.offset;
      if (t.external!.offset + length > d.size) throw new Error(`${graphPath}: tensor ${t.name} wants bytes ${t.external!.offset}..${t.external!.offset + length} of ${t.external!.location}, which has ${d.size}`);
      return d.range(t.external!.offset, t.external!.offset + length);
    };
    const header = (t: TensorRec) => {
      const p = new Parts();
      for (const g of t.header) p.add(g.end - g.start <= READ_LIMIT ? file.read(g.start, g.end - g.start) : file.range(g.start, g.end));
      return p;
    };
    const externalFields = (ref: { location: string; offset: number; length: number }) =>
      new Writer()
        .message(TENSOR.externalData, new Writer().string(ENTRY.key, 'location').string(ENTRY.value, ref.location))
        .message(TENSOR.externalData, new Writer().string(ENTRY.key, 'offset').string(ENTRY.value, String(ref.offset)))
        .message(TENSOR.externalData, new Writer().string(ENTRY.key, 'length').string(ENTRY.value, String(ref.length)))
        .int(TENSOR.dataLocation, DATA_LOCATION_EXTERNAL)
        .finish();
    /** A tensor we make: inline under the threshold, else in the external data. */
    const newTensor = (name: string, dims: number[], dataType: number, data: Uint8Array): Parts => {
      const w = new Writer();
      for (const d of dims) w.int(TENSOR.dims, d);
      w.int(TENSOR.dataType, dataType).string(TENSOR.name, name);
      if (data.byteLength < EXTERNAL_THRESHOLD) w.bytes(TENSOR.rawData, data);
      else w.raw(externalFields(sink.bytes(data)));
      return new Parts().add(w.finish());
    };
    /** An original tensor: as it is when small or typed, else its payload moved to (or copied within) the external data. */
    const copyTensor = (t: TensorRec): Parts => {
      const whole = () => new Parts().add(t.field.end - t.field.start <= READ_LIMIT ? file.read(t.field.start, t.field.end - t.field.start) : file.range(t.field.start, t.field.end));
      if (!t.external && (!t.payload || t.payload.field !== TENSOR.rawData || t.payload.range.length < EXTERNAL_THRESHOLD)) return whole();
      const body = header(t);
      body.add(externalFields(sink.copy(payloadRange(t))));
      return new Parts().field(GRAPH.initializer, body);
    };
    const readWeight = (t: TensorRec): Float32Array => {
      const r = payloadRange(t);
      const count = t.dims[0] * t.dims[1];
      const bytes = r.file.read(r.offset, r.length);
      if (t.dataType === ONNX_DTYPE.FLOAT16) {
        if (r.length !== count * 2) throw new Error(`${graphPath}: tensor ${t.name} has ${r.length} bytes for ${count} float16 values`);
        return fromHalf(new Uint16Array(bytes.buffer, 0, count));
      }
      if (r.length !== count * 4) throw new Error(`${graphPath}: tensor ${t.name} has ${r.length} bytes for ${count} float32 values`);
      return new Float32Array(bytes.buffer, 0, count);
    };

    let parametersQuantized = 0;
    const emitted = new Set<string>();
    const quantized: QuantizedNode[] = [];
    const graph = new Parts();
    const wholeField = (f: FileField) => (f.end - f.start <= READ_LIMIT ? file.read(f.start, f.end - f.start) : file.range(f.start, f.end));
    const planFor = new Map<string, Plan>();
    for (const p of plans.values()) if (!planFor.has(p.weight.name)) planFor.set(p.weight.name, p);
    for (const e of entries) {
      if (e.kind === 'other') {
        graph.add(wholeField(e.field));
      } else if (e.kind === 'node') {
        const p = plans.get(e.node);
        if (!p) {
          graph.add(e.node.bytes ?? wholeField(e.node.field));
          continue;
        }
        const n = e.node;
        const attrs: Record<string, AttributeValue> = { K: p.K, N: p.N, bits: opts.bits, block_size: opts.block };
        if (opts.accuracyLevel !== undefined) attrs.accuracy_level = opts.accuracyLevel;
        const out = p.bias ? fresh(`${n.outputs[0]}${suffix}`) : n.outputs[0];
        const name = n.name ? fresh(`${n.name}${suffix}`) : '';
        graph.add(new Writer().message(GRAPH.node, onnxNode('MatMulNBits', [n.inputs[0], p.names.b, p.names.scales, p.names.zeroPoints], [out], name, attrs, { domain: MS_DOMAIN })).finish());
        if (p.bias) graph.add(new Writer().message(GRAPH.node, onnxNode('Add', [out, p.bias], [n.outputs[0]], n.name ? fresh(`${n.name}_bias`) : '')).finish());
        quantized.push({ node: n.name, op: p.op, weight: p.weight.name, K: p.K, N: p.N, transposed: p.transposed, nbits: { node: name, b: p.names.b, scales: p.names.scales, zeroPoints: p.names.zeroPoints } });
      } else {
        const t = e.tensor;
        const p = planFor.get(t.name);
        if (p && !emitted.has(t.name)) {
          emitted.add(t.name);
          let w = readWeight(t);
          if (p.transposed) w = transpose(w, p.N, p.K);
          const half = t.dataType === ONNX_DTYPE.FLOAT16;
          const q: BlockwiseQuantized = quantizeBlockwise(w, { K: p.K, N: p.N, bits: opts.bits, block: opts.block }, half);
          parametersQuantized += p.K * p.N;
          graph.field(GRAPH.initializer, newTensor(p.names.b, [p.N, q.kBlocks, q.blobSize], UINT8, q.packed));
          graph.field(GRAPH.initializer, newTensor(p.names.scales, [p.N, q.kBlocks], t.dataType, half ? u8(q.scaleBits!) : u8(q.scales)));
          graph.field(GRAPH.initializer, newTensor(p.names.zeroPoints, [p.N, q.zpCols], UINT8, q.zeroPoints));
        }
        if (!dropped.has(t.name)) graph.append(copyTensor(t));
      }
    }
    sink.close();

    // the model: every field as it was, the graph rewritten, com.microsoft imported
    const model = new Parts();
    const opsets = top.filter((f) => f.field === MODEL.opsetImport && f.wire === WIRE.LEN);
    const msImported = opsets.some((f) => {
      const b = file.read(f.dataStart, f.dataEnd - f.dataStart);
      let domain = '';
      new Reader(b).fields((o) => void (o.field === 1 && (domain = readString(b, o))));
      return domain === MS_DOMAIN;
    });
    const msImport = new Writer().message(MODEL.opsetImport, new Writer().string(1, MS_DOMAIN).int(2, 1)).finish();
    for (const f of top) {
      if (f === graphField) model.field(MODEL.graph, graph);
      else model.add(wholeField(f));
      if (f === opsets.at(-1) && !msImported && quantized.length) model.add(msImport);
    }
    if (!opsets.length && quantized.length) model.add(msImport);
    const outGraph = new OutputFile(join(outDir, 'model.onnx'));
    try {
      outGraph.writeParts(model);
    } finally {
      outGraph.close();
    }

    const locations = [...new Set([...inits.values()].flatMap((t) => (t.external ? [t.external.location] : [])))];
    const before = file.size + locations.reduce((a, l) => a + dataOf(l).size, 0);
    const outFiles = ['model.onnx', ...sink.files];
    const after = outFiles.reduce((a, f) => a + statSync(join(outDir, f)).size, 0);
    return { component, quantized, kept, bytesBefore: before, bytesAfter: after, parametersQuantized, files: outFiles, inputDataFiles: locations };
  } finally {
    sink.close();
    file.close();
    for (const f of dataFiles.values()) f.close();
  }
}

export interface TensorData {
  name: string;
  dims: number[];
  dataType: number;
  /** The raw little-endian bytes (raw_data or external data; float_data read as float32 bytes). */
  bytes: Uint8Array;
}

/** The main graph's initializers named in `names` (all when absent) with their bytes, read from the graph and its external data: for checks and tests. */
export function readInitializers(graphPath: string, names?: Iterable<string>): Map<string, TensorData> {
  const wanted = names ? new Set(names) : null;
  const file = new InputFile(graphPath);
  const folder = dirname(graphPath);
  const out = new Map<string, TensorData>();
  try {
    walkFields(file, 0, file.size, (f) => {
      if (f.field !== MODEL.graph || f.wire !== WIRE.LEN) return;
      walkFields(file, f.dataStart, f.dataEnd, (g) => {
        if (g.field !== GRAPH.initializer || g.wire !== WIRE.LEN) return;
        const t = readTensor(file, g);
        if (wanted && !wanted.has(t.name)) return;
        let bytes: Uint8Array;
        if (t.external) {
          if (!staysInFolder(t.external.location)) throw new Error(`${graphPath}: external data location "${t.external.location}" is outside the model folder`);
          const d = new InputFile(join(folder, t.external.location));
          try {
            bytes = d.read(t.external.offset, t.external.length ?? d.size - t.external.offset);
          } finally {
            d.close();
          }
        } else if (t.payload && (t.payload.field === TENSOR.rawData || t.payload.field === FLOAT_DATA)) bytes = file.read(t.payload.range.offset, t.payload.range.length);
        else if (!t.payload) bytes = new Uint8Array(0);
        else throw new Error(`${graphPath}: tensor ${t.name} holds its data in field ${t.payload.field}, not read here`);
        out.set(t.name, { name: t.name, dims: t.dims, dataType: t.dataType, bytes });
      });
    });
    return out;
  } finally {
    file.close();
  }
}
