// The dedicated worker: a thin Comlink adapter over WorkerApi, nothing else.
import * as Comlink from 'comlink';
import { WorkerApi } from './worker-api.ts';

Comlink.expose(new WorkerApi());
