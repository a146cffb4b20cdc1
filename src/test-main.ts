// The test build's entry (test.html): the app with the fault-injecting worker,
// and its API on window for the browser tests. `npm run build` never builds
// this file; tests/e2e/global-setup.ts does, into its own folder.
import { mount } from 'svelte';
import App from './App.svelte';
import type { BackendName } from '../workers/engine/api/types.ts';
import { Comlink, EngineClient } from './lib/engine-client.svelte.ts';
import './app.css';

const backend = (new URLSearchParams(location.search).get('backend') as BackendName | null) ?? undefined;
const client = new EngineClient({
  spawn: () => new Worker(new URL('../workers/engine.test-worker.ts', import.meta.url), { type: 'module', name: 'sd3-engine' }),
  backend,
  source: { kind: 'url', url: new URL('models/tiny-sd3/', location.href).href },
});
// the browser tests drive the worker's API directly; the getter follows restarts
Object.defineProperty(window, '__engine', { get: () => client.api });
Object.assign(window, { __Comlink: Comlink, __client: client });
mount(App, { target: document.getElementById('app')!, props: { client } });
