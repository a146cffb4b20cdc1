// The inpainting mask painted over the input image: one byte per pixel of the
// image (255 = repaint, 0 = keep), a round brush stamped along the pointer's
// path with no antialiasing (the engine binarizes at half grey; with a hard
// edge, what is painted is what is sent), erase, clear, invert and undo. The
// mask the engine gets is a grayscale PNG the image's size, made here.
import { encode as encodePng } from 'fast-png';

/** Undo keeps this many steps (each a copy of the mask before a stroke, clear or invert). */
export const MASK_UNDO_STEPS = 32;

type Box = { x0: number; y0: number; x1: number; y1: number };
const union = (a: Box, b: Box): Box => ({ x0: Math.min(a.x0, b.x0), y0: Math.min(a.y0, b.y0), x1: Math.max(a.x1, b.x1), y1: Math.max(a.y1, b.y1) });

export class MaskEditor {
  readonly width: number;
  readonly height: number;
  /** 255: repaint, 0: keep. Not reactive itself: `version` counts every change. */
  readonly data: Uint8Array;
  /** Brush diameter in image pixels. */
  brush = $state(1);
  erase = $state(false);
  /** Pixels to repaint (white). */
  white = $state(0);
  /** Undo steps held. */
  undoDepth = $state(0);
  /** Bumped on every change, for the canvas to redraw. */
  version = $state(0);
  /** What changed since the canvas last drew it: a box of image pixels (inclusive), 'all', or nothing. */
  private pending: Box | 'all' | null = 'all';
  private undoStack: Uint8Array[] = [];
  private last: { x: number; y: number } | null = null;

  constructor(width: number, height: number) {
    this.width = width;
    this.height = height;
    this.data = new Uint8Array(width * height);
    this.brush = MaskEditor.defaultBrush(width, height);
  }

  /** A brush a sixteenth of the longer side (at least 1 pixel). */
  static defaultBrush(width: number, height: number): number {
    return Math.max(1, Math.round(Math.max(width, height) / 16));
  }

  /** The largest brush offered: a quarter of the longer side (at least 8 pixels). */
  get maxBrush(): number {
    return Math.max(8, Math.round(Math.max(this.width, this.height) / 4));
  }

  private pushUndo(): void {
    this.undoStack.push(this.data.slice());
    if (this.undoStack.length > MASK_UNDO_STEPS) this.undoStack.shift();
    this.undoDepth = this.undoStack.length;
  }

  private changed(box: Box | 'all'): void {
    const p = this.pending;
    this.pending = box === 'all' || p === 'all' ? 'all' : p ? union(p, box) : box;
    this.version++;
  }

  /** Draws what changed since the last call (everything with `all`) on a canvas the mask's size: `rgb` where it repaints, clear elsewhere. */
  draw(ctx: CanvasRenderingContext2D, all = false, rgb: [number, number, number] = [255, 255, 255]): void {
    const p = all ? 'all' : this.pending;
    this.pending = null;
    if (!p) return;
    const box = p === 'all' ? { x0: 0, y0: 0, x1: this.width - 1, y1: this.height - 1 } : p;
    const w = box.x1 - box.x0 + 1;
    const h = box.y1 - box.y0 + 1;
    const img = ctx.createImageData(w, h);
    for (let y = 0; y < h; y++) {
      const row = (box.y0 + y) * this.width + box.x0;
      for (let x = 0; x < w; x++) {
        const v = this.data[row + x];
        const o = (y * w + x) * 4;
        img.data[o] = rgb[0];
        img.data[o + 1] = rgb[1];
        img.data[o + 2] = rgb[2];
        img.data[o + 3] = v;
      }
    }
    ctx.putImageData(img, box.x0, box.y0);
  }

  private count(): void {
    let n = 0;
    for (let i = 0; i < this.data.length; i++) if (this.data[i]) n++;
    this.white = n;
  }

  /** A stroke starts at (x, y), image pixels: one undo step for the whole stroke. */
  begin(x: number, y: number): void {
    this.pushUndo();
    this.last = null;
    this.to(x, y);
  }

  /** The stroke goes on to (x, y): the brush stamped along the way. */
  to(x: number, y: number): void {
    const from = this.last ?? { x, y };
    const r = this.brush / 2;
    const dist = Math.hypot(x - from.x, y - from.y);
    const n = Math.max(1, Math.ceil(dist / Math.max(0.5, r / 2)));
    const value = this.erase ? 0 : 255;
    let dirty: Box | null = null;
    for (let i = 0; i <= n; i++) {
      const d = this.stamp(from.x + ((x - from.x) * i) / n, from.y + ((y - from.y) * i) / n, r, value);
      if (d) dirty = dirty ? union(dirty, d) : d;
    }
    this.last = { x, y };
    if (dirty) this.changed(dirty);
  }

  /** The stroke ends: the painted count is brought up to date. */
  end(): void {
    if (!this.last) return;
    this.last = null;
    this.count();
  }

  /** A disc of radius r (image pixels) centred at (cx, cy): the pixels whose centres it covers (at least the one under it). */
  private stamp(cx: number, cy: number, r: number, value: number): Box | null {
    const x0 = Math.max(0, Math.floor(cx - r));
    const x1 = Math.min(this.width - 1, Math.ceil(cx + r));
    const y0 = Math.max(0, Math.floor(cy - r));
    const y1 = Math.min(this.height - 1, Math.ceil(cy + r));
    if (x0 > x1 || y0 > y1) return null;
    const r2 = Math.max(r * r, 0.5);
    for (let py = y0; py <= y1; py++) {
      for (let px = x0; px <= x1; px++) {
        const dx = px + 0.5 - cx;
        const dy = py + 0.5 - cy;
        if (dx * dx + dy * dy <= r2) this.data[py * this.width + px] = value;
      }
    }
    // the pixel under the pointer, always (a 1-pixel brush between pixel centres)
    const [ux, uy] = [Math.floor(cx), Math.floor(cy)];
    if (ux >= 0 && uy >= 0 && ux < this.width && uy < this.height) this.data[uy * this.width + ux] = value;
    return { x0, y0, x1, y1 };
  }

  clear(): void {
    if (!this.white) return;
    this.pushUndo();
    this.data.fill(0);
    this.white = 0;
    this.changed('all');
  }

  invert(): void {
    this.pushUndo();
    for (let i = 0; i < this.data.length; i++) this.data[i] = this.data[i] ? 0 : 255;
    this.white = this.data.length - this.white;
    this.changed('all');
  }

  undo(): void {
    const prev = this.undoStack.pop();
    if (!prev) return;
    this.undoDepth = this.undoStack.length;
    this.data.set(prev);
    this.last = null;
    this.count();
    this.changed('all');
  }

  /** Puts a stored mask back (one gray sample per pixel, the engine's rule: half grey and above repaints); undoable. */
  load(gray: Uint8Array): void {
    if (gray.length !== this.data.length) throw new RangeError(`a mask of ${gray.length} pixels does not fit a ${this.width}x${this.height} image`);
    this.pushUndo();
    for (let i = 0; i < gray.length; i++) this.data[i] = gray[i] >= 128 ? 255 : 0;
    this.last = null;
    this.count();
    this.changed('all');
  }

  /** The mask as the engine takes it: a grayscale PNG the image's size (opaque, 0 or 255), or null when nothing is painted. */
  png(): Uint8Array | null {
    if (!this.white) return null;
    return encodePng({ width: this.width, height: this.height, data: this.data, channels: 1, depth: 8 });
  }
}
