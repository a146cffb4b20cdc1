// The test build's worker: the production one plus fault injection (see test-worker-api.ts).
import * as Comlink from 'comlink';
import { TestWorkerApi } from './test-worker-api.ts';

Comlink.expose(new TestWorkerApi());
