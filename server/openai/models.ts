/**
 * OpenAI's model objects: the coordinator's model folders, plus any model a
 * connected node advertises, each with the nodes that hold it and how they run it.
 */
import type { Context } from '../context';
import type { AdapterRegistry } from '../adapters';
import type { ModelStore } from '../models';

export interface ModelHolder {
  nodeId: string;
  nodeName: string;
  /** In the GPU (or WASM session) now, not only in the node's weight store. */
  loaded: boolean;
  backend: 'engine' | 'transformers' | null;
  device: 'webgpu' | 'wasm' | null;
  tokensPerSec: number | null;
}

export interface ModelObject {
  id: string;
  object: 'model';
  /** Unix seconds: when this coordinator started (folders carry no creation date of their own). */
  created: number;
  owned_by: 'exec-node';
  /** Served from the coordinator's models folder (nodes fetch it from /models/<id>/). */
  served: boolean;
  nodes: ModelHolder[];
  /** For a `BASE:ADAPTER` id: the base model. */
  parent?: string;
}

export class ModelCatalog {
  readonly #ctx: Context;
  readonly #store: ModelStore | null;
  readonly #adapters: AdapterRegistry | null;

  constructor(ctx: Context, store: ModelStore | null, adapters: AdapterRegistry | null = null) {
    this.#ctx = ctx;
    this.#store = store;
    this.#adapters = adapters;
  }

  /** The models, each served base followed by its adapters as `BASE:ADAPTER` (registry and folder `adapters/`). */
  async list(): Promise<ModelObject[]> {
    const served = new Set(this.#store ? await this.#store.list() : []);
    const holders = this.#holders();
    const ids = [...new Set([...served, ...holders.keys()])].sort();
    const out: ModelObject[] = [];
    for (const id of ids) {
      const nodes = holders.get(id) ?? [];
      out.push(this.#object(id, served.has(id), nodes));
      if (!this.#adapters || !served.has(id)) continue;
      for (const a of await this.#adapters.namesFor(id)) out.push({ ...this.#object(`${id}:${a}`, true, nodes), parent: id });
    }
    return out;
  }

  /**
   * Whether `base` has adapter `adapter`: true when this coordinator does not serve `base` (the nodes say),
   * else the registry or the folder must hold it.
   */
  async hasAdapter(base: string, adapter: string): Promise<boolean> {
    if (!this.#store || !(await this.#store.list()).includes(base)) return true;
    return this.#adapters ? this.#adapters.has(base, adapter) : true;
  }

  /** One model object, or null when neither the coordinator nor a connected node has it. */
  async get(id: string): Promise<ModelObject | null> {
    return (await this.list()).find((m) => m.id === id) ?? null;
  }

  /** Whether this coordinator serves model folders (then a model it neither serves nor sees on a node is unknown). */
  get servesModels(): boolean {
    return this.#store !== null;
  }

  async has(id: string): Promise<boolean> {
    const found = (await this.get(id)) !== null;
    if (found) await this.weigh([id]);
    return found;
  }

  /**
   * Counts the weights of the served models among `names` (ModelStore.weightBytes), so the router knows
   * what each needs before it routes a task for it; a model this coordinator does not serve is skipped.
   */
  async weigh(names: Iterable<string>): Promise<void> {
    if (!this.#store) return;
    for (const name of new Set(names)) await this.#store.weightBytes(name);
  }

  #object(id: string, served: boolean, nodes: ModelHolder[]): ModelObject {
    return { id, object: 'model', created: Math.floor(this.#ctx.metrics.startedAt / 1000), owned_by: 'exec-node', served, nodes };
  }

  #holders(): Map<string, ModelHolder[]> {
    const out = new Map<string, ModelHolder[]>();
    const add = (model: string, h: ModelHolder): void => {
      const list = out.get(model) ?? [];
      list.push(h);
      out.set(model, list);
    };
    for (const node of this.#ctx.scheduler.nodes.values()) {
      if (!node.connected) continue;
      const caps = node.capabilities;
      const inference = new Map((caps.inference?.models ?? []).map((m) => [m.name, m]));
      for (const name of new Set([...caps.models, ...inference.keys()])) {
        const m = inference.get(name);
        add(name, {
          nodeId: node.id,
          nodeName: node.name,
          loaded: m?.loaded ?? false,
          backend: m?.backend ?? null,
          device: m?.device ?? null,
          tokensPerSec: m?.tokensPerSec ?? null,
        });
      }
    }
    return out;
  }
}
