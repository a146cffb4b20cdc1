// The image an image-to-image or inpainting request starts from, as the page
// holds it: PNG bytes (the engine takes PNG files only), its size, where it
// came from, and an object URL to show it. A PNG file is kept byte for byte
// (its SHA-256 is the one the result's metadata records); any other image the
// browser can decode (JPEG, WebP, GIF, AVIF…) is drawn on a canvas and made
// into a PNG here.
import { LIMITS, pngSize } from '../../workers/engine/api/validate.ts';

export interface InputImage {
  png: Uint8Array;
  width: number;
  height: number;
  /** The file's name, or what it came from ("the pasted image", "image 1a2b3c4d"). */
  name: string;
  /** The file's own type when it was converted to PNG here (e.g. "image/jpeg"); null for a PNG kept as it was. */
  convertedFrom: string | null;
  /** The PNG file's SHA-256 (hex): what a result's metadata records of it. */
  sha256: string;
  /** An object URL of the PNG, revoked by whoever drops the image (GenerationForm). */
  url: string;
}

async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes as BufferSource));
  return Array.from(d, (b) => b.toString(16).padStart(2, '0')).join('');
}

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
const isPng = (b: Uint8Array) => b.length >= 8 && PNG_SIGNATURE.every((v, i) => b[i] === v);

/** A file is offered as an image: by its type, or, without one, by its name. */
export function looksLikeImage(f: File): boolean {
  return f.type ? f.type.startsWith('image/') : /\.(png|jpe?g|webp|gif|avif|bmp)$/i.test(f.name);
}

/** A file that says it is a PNG (the page reads settings from those). */
export const isPngFile = (f: File) => f.type === 'image/png' || (!f.type && f.name.toLowerCase().endsWith('.png'));

/** The first image file among dropped, pasted or chosen files. */
export function imageFileIn(items: DataTransferItemList | FileList | undefined | null): File | null {
  const list: (File | DataTransferItem)[] = items ? Array.from(items as ArrayLike<File | DataTransferItem>) : [];
  for (const it of list) {
    const f = it instanceof File ? it : it.kind === 'file' ? it.getAsFile() : null;
    if (f && looksLikeImage(f)) return f;
  }
  return null;
}

async function decodes(blob: Blob): Promise<{ width: number; height: number }> {
  const bmp = await createImageBitmap(blob);
  const size = { width: bmp.width, height: bmp.height };
  bmp.close();
  return size;
}

/**
 * Reads an image file as the engine's input: a PNG as it is (after checking this browser can show
 * it), anything else the browser decodes converted to PNG. Throws an Error saying why not.
 */
export async function readInputImage(file: Blob, name: string): Promise<InputImage> {
  const bytes = new Uint8Array(await file.arrayBuffer());
  const max = LIMITS.imageSide.max;
  if (isPng(bytes)) {
    // the header's size, checked as the engine checks it; then the pixels must decode here too
    const { width, height } = pngSize('image', bytes);
    const shown = await decodes(new Blob([bytes as BlobPart], { type: 'image/png' })).catch(() => null);
    if (!shown) throw new Error('a PNG this browser cannot decode');
    return { png: bytes, width, height, name, convertedFrom: null, sha256: await sha256Hex(bytes), url: URL.createObjectURL(new Blob([bytes as BlobPart], { type: 'image/png' })) };
  }
  let bmp: ImageBitmap;
  try {
    bmp = await createImageBitmap(file, { colorSpaceConversion: 'none' });
  } catch {
    throw new Error('not an image this browser can decode (PNG, JPEG, WebP…)');
  }
  try {
    if (bmp.width > max || bmp.height > max) throw new Error(`${bmp.width}x${bmp.height} pixels; at most ${max}x${max}`);
    const canvas = new OffscreenCanvas(bmp.width, bmp.height);
    canvas.getContext('2d')!.drawImage(bmp, 0, 0);
    const png = new Uint8Array(await (await canvas.convertToBlob({ type: 'image/png' })).arrayBuffer());
    return { png, width: bmp.width, height: bmp.height, name, convertedFrom: file.type || 'an image', sha256: await sha256Hex(png), url: URL.createObjectURL(new Blob([png as BlobPart], { type: 'image/png' })) };
  } finally {
    bmp.close();
  }
}

/** "JPEG" from "image/jpeg", for the slot's line. */
export const typeName = (mime: string) => (mime.startsWith('image/') ? mime.slice(6).toUpperCase().replace(/^SVG\+XML$/, 'SVG') : mime);
