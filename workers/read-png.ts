// The worker's side of reading a dropped, pasted or opened PNG: the file is
// read here, off the page's thread, and each text chunk is capped (see
// settings-chunks.ts). Loaded on first use by WorkerApi.readPngSettings.
import { readPngSettings, type ReadSettings } from './engine/png/settings-chunks.ts';

export async function readPngBlob(png: Blob): Promise<ReadSettings> {
  return readPngSettings(new Uint8Array(await png.arrayBuffer()));
}
