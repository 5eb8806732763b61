/** The engine inside a Web Worker: EngineProbe exposed with comlink (see engine-probe.ts). */
import { expose } from 'comlink';
import { EngineProbe } from './engine-probe';

expose(new EngineProbe());
