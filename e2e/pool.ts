/**
 * The harness most e2e tests share: a coordinator on a temp SQLite file serving the built page, then
 * headless node pages joined to it (after the test has registered its agents), and one close for all.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCoordinator, type Coordinator, type CoordinatorOptions } from '../server';
import { launchNodes, type LaunchedNodes, type LaunchNodesOptions } from '../scripts/nodes';
import { DIST, ensurePageBuilt } from '../scripts/page-build';

export class E2ePool {
  nodes: LaunchedNodes | null = null;

  private constructor(
    /** Temp folder: the journal and the node pages' profiles; removed on close. */
    readonly dir: string,
    readonly coordinator: Coordinator,
    /** The coordinator's base URL, without a trailing slash. */
    readonly url: string,
  ) {}

  /**
   * Builds the page if stale and starts a coordinator (port 0, `staticDir` the build) with `opts`; `setup`
   * first writes what the coordinator serves into the temp folder (models, say) and adds options for it.
   */
  static async start(
    prefix: string,
    opts: Omit<CoordinatorOptions, 'dbPath' | 'port' | 'staticDir'> = {},
    setup?: (dir: string) => Promise<Omit<CoordinatorOptions, 'dbPath' | 'port' | 'staticDir'>>,
  ): Promise<E2ePool> {
    await ensurePageBuilt();
    const dir = mkdtempSync(join(tmpdir(), prefix));
    try {
      const more = setup ? await setup(dir) : {};
      const coordinator = await createCoordinator({ ...opts, ...more, dbPath: join(dir, 'coordinator.db'), port: 0, staticDir: DIST });
      return new E2ePool(dir, coordinator, coordinator.url.replace(/\/$/, ''));
    } catch (err) {
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  /** Launches node pages joined to the coordinator, their profiles under `dir`. */
  async join(opts: Omit<LaunchNodesOptions, 'url' | 'userDataRoot'>): Promise<LaunchedNodes> {
    this.nodes = await launchNodes({ ...opts, url: this.url, userDataRoot: this.dir });
    return this.nodes;
  }

  async close(): Promise<void> {
    await this.nodes?.close();
    this.coordinator.app.server.closeAllConnections(); // a long-poll or event stream still open
    await this.coordinator.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
