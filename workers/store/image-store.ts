// IndexedDB through idb: finished images (PNG Blob + full metadata), the
// input images and masks they were made from (by SHA-256, once however many
// images share one; gone with the last image that names it) and the
// durable queue of accepted requests. A request is written to the queue before
// it runs and leaves it in the same transaction that stores its image, so a
// reload or a crash loses nothing: unfinished entries are replayed from their
// seed and give the same image.
import { openDB, type DBSchema, type IDBPDatabase } from 'idb';
import type { ImageMetadata, ModelSourceSpec } from '../engine/api/types.ts';
import type { LoadModelOptions } from '../engine/engine.ts';
import type { NormalizedRequest } from '../engine/api/validate.ts';
import { EngineError, NotFoundError } from '../engine/errors.ts';

export interface StoredImage {
  id: string;
  png: Blob;
  metadata: ImageMetadata;
}

/** An image request's input file (init image or mask), kept so the image can be made again. */
export interface InputFile {
  sha256: string;
  png: Blob;
}

export interface QueuedRequest {
  id: string;
  request: NormalizedRequest;
  modelId: string;
  acceptedAt: string;
  /** Where its model came from and how it was loaded (never a token), so a reload can load it again. */
  source?: ModelSourceSpec;
  loadOptions?: StoredLoadOptions;
  /** Runs started so far (absent: 1). */
  attempts?: number;
}

/** The load options worth keeping with a request: what makes its model the same model again. */
export type StoredLoadOptions = Pick<LoadModelOptions, 'skipT5' | 't5MaxLength' | 'fit'>;

export interface ImageQuery {
  /** Newest first; at most this many (default 100). */
  limit?: number;
  /** Case-insensitive substring of the prompt. */
  text?: string;
  modelId?: string;
  /** Only images after this one in newest-first order (the last image of the previous page). */
  after?: { createdAt: string; id: string };
}

/** One page of the gallery: images with their PNGs, newest first, and whether older ones match too. */
export interface ImagePage {
  items: StoredImage[];
  more: boolean;
}

interface Schema extends DBSchema {
  /** `inputs`: the SHA-256 of the image's input files (absent for text to image). */
  images: { key: string; value: StoredImage & { createdAt: string; inputs?: string[] }; indexes: { createdAt: string; inputs: string } };
  queue: { key: string; value: QueuedRequest; indexes: { acceptedAt: string } };
  inputs: { key: string; value: InputFile };
}

export const DB_NAME = 'sd3-webgpu';

/** Gallery images per page: opening it costs the same with 10 stored images or 10,000. */
export const GALLERY_PAGE = 48;

/** Whether an image belongs in a query's results: its prompt holds the text (any case), and its model is the one asked. */
export function matchesQuery(m: ImageMetadata, query: Pick<ImageQuery, 'text' | 'modelId'>): boolean {
  const text = query.text?.trim().toLowerCase();
  return (!text || m.prompt.toLowerCase().includes(text)) && (!query.modelId || m.modelId === query.modelId);
}

/** Storage is full or refused a write; what was stored before is intact. */
export class StorageError extends EngineError {
  constructor(reason: string) {
    super('storage', `could not save to this browser's storage (${reason}); earlier images are safe. Free space by deleting images, then retry.`);
  }
}

function storageError(e: unknown): never {
  const name = (e as DOMException)?.name;
  if (name === 'QuotaExceededError') throw new StorageError('quota exceeded');
  throw new StorageError((e as Error)?.message ?? String(e));
}

export class ImageStore {
  private constructor(private readonly db: IDBPDatabase<Schema>) {}

  static async open(name = DB_NAME): Promise<ImageStore> {
    const db = await openDB<Schema>(name, 2, {
      upgrade(db, oldVersion, _newVersion, tx) {
        if (oldVersion < 1) {
          db.createObjectStore('images', { keyPath: 'id' }).createIndex('createdAt', 'createdAt');
          db.createObjectStore('queue', { keyPath: 'id' }).createIndex('acceptedAt', 'acceptedAt');
        }
        // version 2: input images, and which images use each (images stored before have none)
        if (oldVersion < 2) {
          db.createObjectStore('inputs', { keyPath: 'sha256' });
          tx.objectStore('images').createIndex('inputs', 'inputs', { multiEntry: true });
        }
      },
    });
    return new ImageStore(db);
  }

  /** Records an accepted request before it runs (idempotent: a replay keeps its entry). */
  async enqueue(entry: QueuedRequest): Promise<void> {
    await this.db.put('queue', entry).catch(storageError);
  }

  async dequeue(id: string): Promise<void> {
    await this.db.delete('queue', id);
  }

  /** Accepted requests not yet finished, oldest first. */
  async pending(): Promise<QueuedRequest[]> {
    return this.db.getAllFromIndex('queue', 'acceptedAt');
  }

  /** Stores the image with its input files and removes its queue entry, atomically. */
  async complete(image: StoredImage, inputs: readonly InputFile[] = []): Promise<void> {
    try {
      const tx = this.db.transaction(['images', 'queue', 'inputs'], 'readwrite');
      const record = { ...image, createdAt: image.metadata.createdAt, ...(inputs.length ? { inputs: inputs.map((f) => f.sha256) } : {}) };
      await Promise.all([tx.objectStore('images').put(record), ...inputs.map((f) => tx.objectStore('inputs').put(f)), tx.objectStore('queue').delete(image.id), tx.done]);
    } catch (e) {
      storageError(e);
    }
  }

  /** An input file (init image or mask) by its SHA-256, while an image made from it is stored. */
  async input(sha256: string): Promise<Blob> {
    const v = await this.db.get('inputs', sha256);
    if (!v) throw new NotFoundError('input image', sha256);
    return v.png;
  }

  async get(id: string): Promise<StoredImage> {
    const v = await this.db.get('images', id);
    if (!v) throw new NotFoundError('image', id);
    return { id: v.id, png: v.png, metadata: v.metadata };
  }

  async list(query: ImageQuery = {}): Promise<ImageMetadata[]> {
    return (await this.page(query)).items.map((i) => i.metadata);
  }

  /** Newest first, filtered by prompt text and model, walking the time index only as far as the page needs. */
  async page(query: ImageQuery = {}): Promise<ImagePage> {
    const limit = query.limit ?? 100;
    const items: StoredImage[] = [];
    const after = query.after;
    // images of one millisecond share a key; within it the index walks ids downwards
    const range = after ? IDBKeyRange.upperBound(after.createdAt) : null;
    let cursor = await this.db.transaction('images').store.index('createdAt').openCursor(range, 'prev');
    while (cursor) {
      const { id, png, metadata: m } = cursor.value;
      if (after && cursor.key === after.createdAt && id >= after.id) {
        cursor = await cursor.continue();
        continue;
      }
      if (matchesQuery(m, query)) {
        if (items.length === limit) return { items, more: true };
        items.push({ id, png, metadata: m });
      }
      cursor = await cursor.continue();
    }
    return { items, more: false };
  }

  /** Deletes an image, and each of its input files no other image uses. */
  async delete(id: string): Promise<void> {
    const tx = this.db.transaction(['images', 'inputs'], 'readwrite');
    const images = tx.objectStore('images');
    const record = await images.get(id);
    if (!record) throw new NotFoundError('image', id);
    await images.delete(id);
    for (const sha of record.inputs ?? []) if ((await images.index('inputs').count(sha)) === 0) await tx.objectStore('inputs').delete(sha);
    await tx.done;
  }

  /** Every image, input file and queued request: the "delete all data" action. */
  async clear(): Promise<void> {
    const tx = this.db.transaction(['images', 'queue', 'inputs'], 'readwrite');
    await Promise.all([tx.objectStore('images').clear(), tx.objectStore('queue').clear(), tx.objectStore('inputs').clear(), tx.done]);
  }

  close(): void {
    this.db.close();
  }
}
