// Several images as one ZIP (fflate): PNGs are stored as they are (already
// deflated), each with its settings as JSON beside it.
import { zipSync, strToU8 } from 'fflate';
import type { ImageMetadata } from '../../workers/engine/api/types.ts';

export const imageFileName = (m: Pick<ImageMetadata, 'seed' | 'id'>) => `sd3-${m.seed}-${m.id.slice(0, 8)}.png`;

export async function zipImages(items: { metadata: ImageMetadata; png: Blob }[]): Promise<Blob> {
  const files: Record<string, [Uint8Array, { level: 0 }]> = {};
  for (const { metadata, png } of items) {
    const name = imageFileName(metadata);
    files[name] = [new Uint8Array(await png.arrayBuffer()), { level: 0 }];
    files[name.replace(/\.png$/, '.json')] = [strToU8(JSON.stringify(metadata, null, 2)), { level: 0 }];
  }
  return new Blob([zipSync(files) as Uint8Array<ArrayBuffer>], { type: 'application/zip' });
}

/** Saves a Blob under a file name through a temporary link. */
export function saveBlob(blob: Blob, name: string): void {
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
