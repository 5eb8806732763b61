/**
 * Mounts: preopened directory trees made from a run's files, read-only or writable with a
 * byte cap, and read back at exit. The layer (wasi.ts) asks `MountTable` which mount an inode
 * lies in: a read-only one answers ROFS to anything that would change it; a writable one
 * counts bytes (file data plus a fixed cost per entry, so empty files and directories are not
 * free) and answers NOSPC past its cap.
 */
import { Directory, File, PreopenDirectory, type Inode } from '@bjorn3/browser_wasi_shim';
import { Symlink, newDirectory } from './fs';

/** What one mount of the layer is. */
export interface MountOptions {
  /** The preopen's root directory (PreopenDirectory.dir). */
  root: Directory;
  readonly: boolean;
  /** Writable mounts: cap on bytes (data + entryBytes per entry). Absent: no cap. */
  maxBytes?: number;
}

/** A writable mount's byte count. */
export class Quota {
  used = 0;
  constructor(
    readonly root: Directory,
    readonly max: number,
  ) {}
}

export class MountTable {
  readonly #readonly = new WeakSet<object>();
  readonly #quota = new WeakMap<Inode, Quota>();
  readonly entryBytes: number;
  /** The first quota that refused a write (NOSPC), if any. */
  full: Quota | null = null;

  constructor(mounts: readonly MountOptions[], entryBytes: number) {
    this.entryBytes = entryBytes;
    for (const m of mounts) {
      if (m.readonly) {
        walk(m.root, (n) => this.#readonly.add(n));
      } else {
        const q = new Quota(m.root, m.maxBytes ?? Number.MAX_SAFE_INTEGER);
        walk(m.root, (n) => {
          this.#quota.set(n, q);
          if (n !== m.root) q.used += entryBytes + (n instanceof File ? n.data.byteLength : 0);
        });
      }
    }
  }

  /** The inode lies in a read-only mount. */
  readonly(n: object): boolean {
    return this.#readonly.has(n);
  }

  quota(n: Inode): Quota | undefined {
    return this.#quota.get(n);
  }

  /** Counts `bytes` more against the mount of `n`; false (and `full` set) when that passes its cap. */
  grow(n: Inode, bytes: number): boolean {
    if (bytes <= 0) return true;
    const q = this.#quota.get(n);
    if (!q) return true;
    if (q.used + bytes > q.max) {
      this.full ??= q;
      return false;
    }
    q.used += bytes;
    return true;
  }

  shrink(n: Inode, bytes: number): void {
    const q = this.#quota.get(n);
    if (q && bytes > 0) q.used = Math.max(0, q.used - bytes);
  }

  /** A new inode in `dir` belongs to dir's mount. */
  adopt(child: Inode, dir: Inode): void {
    const q = this.#quota.get(dir);
    if (q) this.#quota.set(child, q);
    if (this.#readonly.has(dir)) this.#readonly.add(child);
  }
}

function walk(dir: Directory, visit: (n: Inode) => void): void {
  visit(dir);
  for (const child of dir.contents.values()) {
    if (child instanceof Directory) walk(child, visit);
    else visit(child);
  }
}

/**
 * A preopen at `path` holding `files` (relative path → bytes; directories made as needed).
 * Paths are trusted to be clean (checkAgentPayload). Files of a read-only mount are read-only.
 */
export function mountTree(path: string, files: Record<string, Uint8Array>, readonly: boolean): PreopenDirectory {
  const pre = new PreopenDirectory(path, new Map());
  for (const rel of Object.keys(files)) {
    const segs = rel.split('/');
    let dir = pre.dir;
    for (let i = 0; i < segs.length - 1; i++) {
      const next = dir.contents.get(segs[i]);
      if (next instanceof Directory) {
        dir = next;
      } else {
        const made = newDirectory(dir);
        dir.contents.set(segs[i], made);
        dir = made;
      }
    }
    dir.contents.set(segs[segs.length - 1], new File(files[rel], { readonly }));
  }
  return pre;
}

/** Every regular file under `dir`, relative path → bytes, in tree order; links and empty directories are left out. */
export function collectFiles(dir: Directory, out: [string, Uint8Array][] = [], prefix = ''): [string, Uint8Array][] {
  for (const [name, child] of dir.contents) {
    if (child instanceof File) out.push([prefix + name, child.data]);
    else if (child instanceof Directory) collectFiles(child, out, `${prefix}${name}/`);
    else if (child instanceof Symlink) continue;
  }
  return out;
}
