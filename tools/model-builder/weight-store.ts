// Where a built model's bytes go: a folder on disk (large presets stream their
// weights to external data as each tensor is made, so a multi-GB build never
// holds more than one tensor) or memory (the tiny model, so tests can compare
// two builds byte for byte).
import { closeSync, ftruncateSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';

export interface ExternalRef {
  location: string;
  offset: number;
  length: number;
}

/** A file written in pieces. */
export interface FileSink {
  write(bytes: Uint8Array): void;
  /** Leaves `n` zero bytes (a hole on disk). */
  skip(n: number): void;
  close(): void;
}

export interface ModelOutput {
  /** A whole small file (configs, tokenizers, graphs). */
  file(path: string, bytes: Uint8Array): void;
  open(path: string): FileSink;
  /** Paths written so far, with their sizes. */
  readonly sizes: Map<string, number>;
}

/** Everything in memory: path -> bytes (a file of holes alone is kept as its size only). */
export class MemoryOutput implements ModelOutput {
  readonly files = new Map<string, Uint8Array>();
  readonly sizes = new Map<string, number>();

  file(path: string, bytes: Uint8Array): void {
    this.files.set(path, bytes);
    this.sizes.set(path, bytes.byteLength);
  }

  open(path: string): FileSink {
    const chunks: Uint8Array[] = [];
    let size = 0;
    let written = false;
    return {
      write: (b) => {
        chunks.push(b.slice());
        size += b.byteLength;
        written = true;
      },
      skip: (n) => {
        chunks.push(new Uint8Array(n));
        size += n;
      },
      close: () => {
        if (!written) {
          this.sizes.set(path, size);
          return;
        }
        const all = new Uint8Array(size);
        let at = 0;
        for (const c of chunks) {
          all.set(c, at);
          at += c.byteLength;
        }
        this.file(path, all);
      },
    };
  }
}

/** A folder on disk; large files are written as they are made. */
export class FolderOutput implements ModelOutput {
  readonly sizes = new Map<string, number>();

  constructor(readonly root: string) {}

  file(path: string, bytes: Uint8Array): void {
    const sink = this.open(path);
    sink.write(bytes);
    sink.close();
  }

  open(path: string): FileSink {
    const full = join(this.root, path);
    mkdirSync(dirname(full), { recursive: true });
    const fd = openSync(full, 'w');
    let pos = 0;
    return {
      write: (b) => {
        let done = 0;
        while (done < b.byteLength) done += writeSync(fd, b, done, b.byteLength - done, pos + done);
        pos += b.byteLength;
      },
      skip: (n) => {
        pos += n;
      },
      close: () => {
        ftruncateSync(fd, pos); // a trailing hole still counts in the file's size
        closeSync(fd);
        this.sizes.set(path, pos);
      },
    };
  }
}

export interface ExternalDataOptions {
  /** Start a new shard (`<location>.000`, `.001`, …) before a tensor would pass this many bytes. */
  shardBytes?: number;
  /** Record sizes only: the data files are holes of the right size (memory planning, load tests). */
  sparse?: boolean;
}

/** One component's external data: tensors laid out whole, 64-byte aligned, as onnx's save_model does. */
export class ExternalData {
  private sink: FileSink | null = null;
  private shard = -1;
  private offset = 0;
  private location = '';
  /** Locations written, in order. */
  readonly locations: string[] = [];

  constructor(
    private readonly out: ModelOutput,
    private readonly folder: string,
    private readonly baseLocation: string,
    private readonly opts: ExternalDataOptions = {},
  ) {}

  private next(): void {
    this.sink?.close();
    this.shard++;
    this.location = this.opts.shardBytes ? `${this.baseLocation}.${String(this.shard).padStart(3, '0')}` : this.baseLocation;
    this.locations.push(this.location);
    this.sink = this.out.open(`${this.folder}/${this.location}`);
    this.offset = 0;
  }

  /** Places one tensor; `make` is called only when its bytes are really written. */
  put(length: number, make: () => Uint8Array): ExternalRef {
    if (!this.sink || (this.opts.shardBytes && this.offset > 0 && this.offset + length > this.opts.shardBytes)) this.next();
    const ref = { location: this.location, offset: this.offset, length };
    if (this.opts.sparse) this.sink!.skip(length);
    else {
      const bytes = make();
      if (bytes.byteLength !== length) throw new Error(`tensor of ${bytes.byteLength} bytes where ${length} were planned`);
      this.sink!.write(bytes);
    }
    this.offset += length;
    const pad = (64 - (this.offset % 64)) % 64;
    if (pad) {
      this.sink!.skip(pad);
      this.offset += pad;
    }
    return ref;
  }

  close(): void {
    this.sink?.close();
    this.sink = null;
  }
}
