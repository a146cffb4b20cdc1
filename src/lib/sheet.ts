// The X/Y plot's sheet as one labelled PNG: axis titles, values, every cell's
// image, and the plot's settings in its chunks (A1111's X/Y plot fields, and
// every cell's metadata as JSON).
import type { ImageMetadata } from '../../workers/engine/api/types.ts';
import { a1111Parameters, pngBlobWithSettings } from '../../workers/engine/png/settings-chunks.ts';
import { sheetLayout, type XYPlan } from './xy-plot.ts';

export async function renderSheet(plan: XYPlan, cells: { png: Blob; metadata: ImageMetadata }[]): Promise<Blob> {
  const w = Math.max(...cells.map((c) => c.metadata.width));
  const h = Math.max(...cells.map((c) => c.metadata.height));
  const L = sheetLayout(plan.columns, plan.rows, w, h);
  const canvas = new OffscreenCanvas(L.width, L.height);
  const ctx = canvas.getContext('2d')!;
  ctx.fillStyle = '#ffffff';
  ctx.fillRect(0, 0, L.width, L.height);
  ctx.fillStyle = '#111111';
  ctx.textBaseline = 'middle';
  ctx.textAlign = 'center';
  ctx.font = 'bold 16px sans-serif';
  if (plan.x) ctx.fillText(plan.x.title, L.left + (plan.columns * L.cellW) / 2, 16, plan.columns * L.cellW);
  ctx.textAlign = 'left';
  if (plan.y) ctx.fillText(`↓ ${plan.y.title}`, 8, 16, L.left - 16);
  ctx.font = '14px sans-serif';
  ctx.textAlign = 'center';
  plan.x?.values.forEach((v, c) => ctx.fillText(v, L.left + c * L.cellW + L.cellW / 2, 32 + 20, L.cellW - 8));
  ctx.textAlign = 'right';
  plan.y?.values.forEach((v, r) => ctx.fillText(v, L.left - 8, L.top + r * L.cellH + L.cellH / 2, L.left - 16));
  ctx.imageSmoothingEnabled = false;
  for (const [i, cell] of cells.entries()) {
    const { col, row } = plan.cells[i];
    const bmp = await createImageBitmap(cell.png);
    const s = Math.min(L.cellW / bmp.width, L.cellH / bmp.height);
    const [dw, dh] = [bmp.width * s, bmp.height * s];
    ctx.drawImage(bmp, L.left + col * L.cellW + (L.cellW - dw) / 2, L.top + row * L.cellH + (L.cellH - dh) / 2, dw, dh);
    bmp.close();
  }
  const first = cells[0].metadata;
  const extra: Record<string, string> = { Script: 'X/Y plot' };
  if (plan.x) Object.assign(extra, { 'X Type': plan.x.title, 'X Values': plan.x.values.join(', ') });
  if (plan.y) Object.assign(extra, { 'Y Type': plan.y.title, 'Y Values': plan.y.values.join(', ') });
  const json = { xyPlot: { x: plan.x, y: plan.y, columns: plan.columns, rows: plan.rows }, cells: cells.map((c) => c.metadata) };
  return pngBlobWithSettings(await canvas.convertToBlob({ type: 'image/png' }), a1111Parameters(first, extra), json);
}
