import { mount } from 'svelte';
import App from './App.svelte';
import type { BackendName } from '../workers/engine/api/types.ts';
import { EngineClient, spawnEngineWorker } from './lib/engine-client.svelte.ts';
import './app.css';

const backend = (new URLSearchParams(location.search).get('backend') as BackendName | null) ?? undefined;
const client = new EngineClient({ spawn: spawnEngineWorker, backend, source: { kind: 'url', url: new URL('models/tiny-sd3/', location.href).href } });
mount(App, { target: document.getElementById('app')!, props: { client } });
