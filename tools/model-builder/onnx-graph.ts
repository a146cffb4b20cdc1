// A small ONNX graph builder: just enough to write SD3's components, from the
// tiny model to full-width presets. Weights are seeded by parameter name, so
// every build writes the same bytes; large weights stream straight into an
// external data file (weight-store.ts) instead of staying in memory.
import onnxProto from 'onnx-proto';
import { toHalf } from '../../workers/engine/model/float16.ts';
import { fastWeightBytes } from './fast-weights.ts';
import type { ExternalData, ExternalRef } from './weight-store.ts';

const { onnx } = onnxProto;
type Dim = number | string;

export const DType = { float: 1, int32: 6, int64: 7, float16: 10 } as const;
export type DTypeCode = (typeof DType)[keyof typeof DType];
export type FloatType = 'float32' | 'float16';

export const OPSET = 17;
export const MS_DOMAIN = 'com.microsoft';

/** FNV-1a over the parameter name: the seed of that parameter's weights. */
function hashName(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** mulberry32 + Box-Muller: deterministic, platform-independent weight noise. */
function seededNormals(seed: number, n: number): Float32Array {
  let a = seed >>> 0;
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(uniform()));
    const theta = 2 * Math.PI * uniform();
    out[i] = r * Math.cos(theta);
    if (i + 1 < n) out[i + 1] = r * Math.sin(theta);
  }
  return out;
}

type AttrValue = number | number[] | string | { floats: number[] } | { float: number };

interface Initializer {
  name: string;
  dims: number[];
  dataType: DTypeCode;
  byteLength: number;
  /** Inline bytes, or where the bytes went in the external data. */
  raw?: Uint8Array;
  external?: ExternalRef;
}

export interface GraphOptions {
  /** Element type of weights and activations (the model's dtype). */
  float?: FloatType;
  /** Where weights of at least `externalThreshold` bytes go; inline when absent. */
  external?: ExternalData;
  /** onnx's save_model default: tensors under 1 KiB stay inside the graph. */
  externalThreshold?: number;
  /** Weights from fast-weights.ts (uniform bands at disk speed) instead of normals: benchmarks of full-size models. */
  fastWeights?: boolean;
}

const elementBytes = (t: DTypeCode) => (t === DType.float16 ? 2 : t === DType.int64 ? 8 : 4);
const bytesOf = (a: Float32Array | Uint16Array | Int32Array | BigInt64Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

export class Graph {
  private nodes: InstanceType<typeof onnx.NodeProto>[] = [];
  private inits: Initializer[] = [];
  private initNames = new Set<string>();
  private inputs: InstanceType<typeof onnx.ValueInfoProto>[] = [];
  private outputs: InstanceType<typeof onnx.ValueInfoProto>[] = [];
  private counter = 0;
  private constCache = new Map<string, string>();
  private usesMsDomain = false;
  /** ONNX element type of weights and activations. */
  readonly floatType: DTypeCode;

  constructor(
    readonly name: string,
    private readonly opts: GraphOptions = {},
  ) {
    this.floatType = opts.float === 'float16' ? DType.float16 : DType.float;
  }

  input(name: string, dtype: DTypeCode, dims: Dim[]): string {
    this.inputs.push(valueInfo(name, dtype, dims));
    return name;
  }

  /** Marks `value` as a graph output called `name` (through Identity when the names differ). */
  output(value: string, name: string, dtype: DTypeCode, dims: Dim[]): string {
    if (value !== name) this.op('Identity', [value], {}, name);
    this.outputs.push(valueInfo(name, dtype, dims));
    return name;
  }

  moveOutputsFirst(names: string[]): void {
    const first = names.map((n) => this.outputs.find((o) => o.name === n)!);
    this.outputs = [...first, ...this.outputs.filter((o) => !names.includes(o.name))];
  }

  /** Float data in the graph's float type: converted to fp16 bits when the model is fp16. */
  private floatBytes(data: Float32Array, type: DTypeCode): Uint8Array {
    return type === DType.float16 ? bytesOf(toHalf(data)) : bytesOf(data);
  }

  private addInit(name: string, dims: number[], dataType: DTypeCode, make: () => Uint8Array, external = true): string {
    if (this.initNames.has(name)) throw new Error(`duplicate initializer ${name}`);
    this.initNames.add(name);
    const byteLength = dims.reduce((a, b) => a * b, 1) * elementBytes(dataType);
    const store = this.opts.external;
    if (external && store && byteLength >= (this.opts.externalThreshold ?? 1024)) {
      this.inits.push({ name, dims, dataType, byteLength, external: store.put(byteLength, make) });
    } else {
      this.inits.push({ name, dims, dataType, byteLength, raw: make() });
    }
    return name;
  }

  /** A trainable-looking weight: N(0, scale^2), seeded by its name. */
  weight(name: string, dims: number[], scale: number): string {
    const n = dims.reduce((a, b) => a * b, 1);
    return this.addInit(name, dims, this.floatType, () => {
      if (this.opts.fastWeights) return fastWeightBytes(hashName(`${this.name}/${name}`), n, scale, this.floatType === DType.float16);
      const data = seededNormals(hashName(`${this.name}/${name}`), n);
      for (let i = 0; i < n; i++) data[i] *= scale;
      return this.floatBytes(data, this.floatType);
    });
  }

  /** A named float tensor with given contents (constant tables, norm weights), in the graph's float type. */
  tensor(name: string, dims: number[], data: Float32Array | (() => Float32Array)): string {
    return this.addInit(name, dims, this.floatType, () => this.floatBytes(typeof data === 'function' ? data() : data.slice(), this.floatType));
  }

  fill(name: string, dims: number[], value: number): string {
    return this.tensor(name, dims, () => new Float32Array(dims.reduce((a, b) => a * b, 1)).fill(value));
  }

  /** Shared int64 constant (shapes, axes, indices). */
  ints(values: number[], scalar = false): string {
    return this.constant(`i64:${scalar}:${values.join(',')}`, 'i64', scalar ? [] : [values.length], DType.int64, () => bytesOf(new BigInt64Array(values.map((v) => BigInt(v)))));
  }

  int32s(values: number[], scalar = false): string {
    return this.constant(`i32:${scalar}:${values.join(',')}`, 'i32', scalar ? [] : [values.length], DType.int32, () => bytesOf(new Int32Array(values)));
  }

  /** Shared float constant (scalars broadcast), in the graph's float type unless `type` says otherwise. */
  floats(values: number[], dims?: number[], type: DTypeCode = this.floatType): string {
    const tag = type === DType.float16 ? 'f16' : 'f32';
    return this.constant(`${tag}:${dims?.join('x') ?? 's'}:${values.join(',')}`, tag, dims ?? (values.length === 1 ? [] : [values.length]), type, () => this.floatBytes(new Float32Array(values), type));
  }

  private constant(key: string, tag: string, dims: number[], type: DTypeCode, make: () => Uint8Array): string {
    let name = this.constCache.get(key);
    if (!name) {
      name = this.addInit(`const_${this.constCache.size}_${tag}`, dims, type, make, false);
      this.constCache.set(key, name);
    }
    return name;
  }

  /** x as `to` (no node when it already is). */
  cast(x: string, from: DTypeCode, to: DTypeCode): string {
    return from === to ? x : this.op('Cast', [x], { to });
  }

  /** Adds a node; returns its single output name. */
  op(type: string, inputs: string[], attrs: Record<string, AttrValue> = {}, outName?: string): string {
    return this.opN(type, inputs, 1, attrs, outName ? [outName] : undefined)[0];
  }

  /** A contrib op from onnxruntime's com.microsoft domain (MultiHeadAttention). */
  msOp(type: string, inputs: string[], attrs: Record<string, AttrValue> = {}): string {
    this.usesMsDomain = true;
    return this.opN(type, inputs, 1, attrs, undefined, MS_DOMAIN)[0];
  }

  opN(type: string, inputs: string[], nOut: number, attrs: Record<string, AttrValue> = {}, outNames?: string[], domain = ''): string[] {
    const id = this.counter++;
    const outputs = outNames ?? Array.from({ length: nOut }, (_, i) => `${type.toLowerCase()}_${id}${nOut > 1 ? `_${i}` : ''}`);
    this.nodes.push(
      onnx.NodeProto.create({
        name: `${type}_${id}`,
        opType: type,
        domain,
        input: inputs,
        output: outputs,
        attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
      }),
    );
    return outputs;
  }

  /** The graph as an ONNX model; external weights were already written to the external data. */
  serialize(): Uint8Array {
    const initializer = this.inits.map((t) =>
      t.external
        ? onnx.TensorProto.create({
            name: t.name,
            dims: t.dims,
            dataType: t.dataType,
            dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
            externalData: [
              { key: 'location', value: t.external.location },
              { key: 'offset', value: String(t.external.offset) },
              { key: 'length', value: String(t.external.length) },
            ],
          })
        : onnx.TensorProto.create({ name: t.name, dims: t.dims, dataType: t.dataType, rawData: t.raw }),
    );
    const model = onnx.ModelProto.create({
      irVersion: 8,
      producerName: 'sd3-webgpu model builder',
      opsetImport: [{ domain: '', version: OPSET }, ...(this.usesMsDomain ? [{ domain: MS_DOMAIN, version: 1 }] : [])],
      graph: onnx.GraphProto.create({
        name: this.name,
        node: this.nodes,
        initializer,
        input: this.inputs,
        output: this.outputs,
      }),
    });
    return onnx.ModelProto.encode(model).finish();
  }

  /** Number of weight values (parameters and constant tables). */
  get parameters(): number {
    return this.inits.reduce((a, t) => a + t.byteLength / elementBytes(t.dataType), 0);
  }

  /** Bytes held by initializers: the model's weight size. */
  get weightBytes(): number {
    return this.inits.reduce((a, t) => a + t.byteLength, 0);
  }
}

function valueInfo(name: string, dtype: DTypeCode, dims: Dim[]) {
  return onnx.ValueInfoProto.create({
    name,
    type: {
      tensorType: {
        elemType: dtype,
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  });
}

function attribute(name: string, v: AttrValue) {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof v === 'number') return onnx.AttributeProto.create({ name, type: T.INT, i: v });
  if (typeof v === 'string') return onnx.AttributeProto.create({ name, type: T.STRING, s: new TextEncoder().encode(v) });
  if (Array.isArray(v)) return onnx.AttributeProto.create({ name, type: T.INTS, ints: v });
  if ('floats' in v) return onnx.AttributeProto.create({ name, type: T.FLOATS, floats: v.floats });
  return onnx.AttributeProto.create({ name, type: T.FLOAT, f: v.float });
}
