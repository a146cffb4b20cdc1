// Real size in Chromium on WebGPU (SwiftShader, 1 GiB buffers), through the
// app's worker: the full-depth SD3-medium fp32 transformer loads from one
// 8.3 GB external data file without re-sharding, streamed from Cache Storage
// with the renderer's memory growing by a small part of the model; a
// full-width SD3-medium with 2 blocks runs a step at 1024² without any buffer
// over the adapter's limit. The figures are written to bench/results.json.
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { scaleBench } from '../../bench/scale.ts';

describe('real size (npm run test:scale)', () => {
  it('loads an 8.3 GB file, steps at 1024², within the memory it promises', async () => {
    const r = (await scaleBench(fileURLToPath(new URL('../../bench/results.json', import.meta.url)))) as {
      runtime: string;
      load: { transformerDataFileGb: number; cached: { peakGrowthToModel: number; privatePeakGrowthToModel: number } };
      steps: Record<string, { largestGpuBufferMb: number; estimateToMeasured: number; stepMs: number[] }>;
      streamedVsBuffers: { streamed: { rendererPeakGrowthGb: number }; buffers: { rendererPeakGrowthGb: number } };
    };
    expect(r.runtime).toBe('jspi');
    expect(r.load.transformerDataFileGb).toBeGreaterThan(2);
    // streamed: the renderer's own memory grows by a small part of the model, not by the model
    expect(r.load.cached.privatePeakGrowthToModel).toBeLessThan(0.25);
    expect(r.streamedVsBuffers.streamed.rendererPeakGrowthGb).toBeLessThan(r.streamedVsBuffers.buffers.rendererPeakGrowthGb);
    for (const side of ['256', '1024']) {
      expect(r.steps[side].stepMs).toHaveLength(side === '256' ? 2 : 1); // the steps each request asked for
      expect(r.steps[side].largestGpuBufferMb).toBeLessThanOrEqual(1024);
      // the admission estimate covers what onnxruntime allocated
      expect(r.steps[side].estimateToMeasured).toBeGreaterThanOrEqual(1);
    }
  });
});
