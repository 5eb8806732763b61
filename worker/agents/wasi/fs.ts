/**
 * The in-memory file tree as the layer sees it: the shim's `Directory` and `File` inodes,
 * plus symbolic links (the shim has none), per-inode timestamps and link counts (the shim
 * keeps neither), and path resolution that follows symlinks (the shim's `Path.from`
 * resolves `..` lexically and knows no links).
 *
 * Resolution follows WASI preview1 `lookupflags.symlink_follow` (docs.md, "lookupflags"):
 * links in the middle of a path are always expanded, the last component only with the flag
 * (or when the path ends in `/`). Paths stay inside the preopen: an absolute path or link
 * target, or `..` above the preopen, is NOTCAPABLE. More than MAX_SYMLINKS expansions is LOOP
 * (POSIX ELOOP; Linux's bound of 40).
 */
import { Directory, File, Inode, wasi, type Fd } from '@bjorn3/browser_wasi_shim';

export const MAX_SYMLINKS = 40;

/** A symbolic link: its target is stored as given, resolved only when followed. */
export class Symlink extends Inode {
  readonly target: string;
  constructor(target: string) {
    super();
    this.target = target;
  }
  path_open(): { ret: number; fd_obj: Fd | null } {
    return { ret: wasi.ERRNO_LOOP, fd_obj: null };
  }
  stat(): wasi.Filestat {
    return new wasi.Filestat(this.ino, wasi.FILETYPE_SYMBOLIC_LINK, BigInt(new TextEncoder().encode(this.target).byteLength));
  }
}

export interface Times {
  atim: bigint;
  mtim: bigint;
  ctim: bigint;
}

/** Realtime clock in nanoseconds (sub-millisecond where performance.now() gives it). */
export const realtimeNs = (): bigint => BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
/** Monotonic clock in nanoseconds (what poll_oneoff's monotonic clocks compare against). */
export const monotonicNs = (): bigint => BigInt(Math.round(performance.now() * 1e6));

/** Timestamps and link counts of inodes, kept beside the shim's objects. */
export class Metadata {
  readonly #times = new WeakMap<object, Times>();
  readonly #links = new WeakMap<object, number>();
  /** What an inode that existed before the run reports: the time the layer was made. */
  readonly #epoch = realtimeNs();

  times(node: object): Times {
    let t = this.#times.get(node);
    if (!t) {
      t = { atim: this.#epoch, mtim: this.#epoch, ctim: this.#epoch };
      this.#times.set(node, t);
    }
    return t;
  }

  /** A new inode: all three times now. */
  created(node: object): void {
    const now = realtimeNs();
    this.#times.set(node, { atim: now, mtim: now, ctim: now });
  }

  /** Data (or directory entries) changed: mtime and ctime now. */
  modified(node: object): void {
    const t = this.times(node);
    t.mtim = t.ctim = realtimeNs();
  }

  /** Only the inode changed (links, rename, times set): ctime now. */
  changed(node: object): void {
    this.times(node).ctim = realtimeNs();
  }

  links(node: object): number {
    return this.#links.get(node) ?? 1;
  }

  addLink(node: object, delta: number): void {
    this.#links.set(node, this.links(node) + delta);
  }

  stat(node: Inode): import('./layout').FileStat {
    const s = node.stat();
    const t = this.times(node);
    return { ino: s.ino, filetype: s.filetype, nlink: BigInt(this.links(node)), size: s.size, ...t };
  }
}

export interface Lookup {
  /** The directory holding the last component (or the directory itself when `name` is null). */
  dir: Directory;
  /** The last component; null when the path names `dir` itself (`.`, `a/..`). */
  name: string | null;
  /** What the last component names, undefined when nothing does. Never a followed link. */
  entry: Inode | undefined;
  /** The path ends in `/` (or `/.`): it must name a directory. */
  trailingSlash: boolean;
}

export type LookupResult = { ret: 0; at: Lookup } | { ret: number; at: null };

const fail = (ret: number): LookupResult => ({ ret, at: null });

/**
 * Resolves `path` from `root`. Every link but the last component's is followed; the last
 * one's when `followLast` or the path ends in `/`.
 */
export function lookup(root: Directory, path: string, followLast: boolean): LookupResult {
  if (path === '') return fail(wasi.ERRNO_NOENT);
  if (path.includes('\0')) return fail(wasi.ERRNO_INVAL);
  if (path.startsWith('/')) return fail(wasi.ERRNO_NOTCAPABLE);
  const trailingSlash = /\/\.?$/.test(path);
  let parts = path.split('/').filter((p) => p !== '');
  const stack: Directory[] = [root];
  let expansions = 0;
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i];
    const last = i === parts.length - 1;
    const dir = stack[stack.length - 1];
    if (part === '.' || part === '..') {
      if (part === '..') {
        if (stack.length === 1) return fail(wasi.ERRNO_NOTCAPABLE);
        stack.pop();
      }
      if (last) {
        const here = stack[stack.length - 1];
        return { ret: 0, at: { dir: here, name: null, entry: here, trailingSlash: true } };
      }
      continue;
    }
    const child = dir.contents.get(part);
    if (child instanceof Symlink && (!last || followLast || trailingSlash)) {
      if (++expansions > MAX_SYMLINKS) return fail(wasi.ERRNO_LOOP);
      if (child.target.startsWith('/')) return fail(wasi.ERRNO_NOTCAPABLE);
      const target = child.target.split('/').filter((p) => p !== '');
      if (target.length === 0) return fail(wasi.ERRNO_NOENT);
      parts = [...target, ...parts.slice(i + 1)];
      i = -1;
      continue;
    }
    if (last) return { ret: 0, at: { dir, name: part, entry: child, trailingSlash } };
    if (child === undefined) return fail(wasi.ERRNO_NOENT);
    if (!(child instanceof Directory)) return fail(wasi.ERRNO_NOTDIR);
    stack.push(child);
  }
  // Only `.`/`..` components or a path of slashes after the prefix: handled above, or "" parts.
  return { ret: 0, at: { dir: stack[stack.length - 1], name: null, entry: stack[stack.length - 1], trailingSlash: true } };
}

/** Resolves `path` to an existing inode (NOENT if none; NOTDIR if it ends in `/` but is not a directory). */
export function resolve(root: Directory, path: string, followLast: boolean): { ret: number; node: Inode | null } {
  const r = lookup(root, path, followLast);
  if (!r.at) return { ret: r.ret, node: null };
  const { entry, trailingSlash } = r.at;
  if (entry === undefined) return { ret: wasi.ERRNO_NOENT, node: null };
  if (trailingSlash && !(entry instanceof Directory)) return { ret: wasi.ERRNO_NOTDIR, node: null };
  return { ret: 0, node: entry };
}

/** A new empty directory under `parent` (the shim's Directory keeps `..` in a private field). */
export function newDirectory(parent: Directory): Directory {
  const dir = new Directory(new Map());
  Object.assign(dir, { parent });
  return dir;
}

/** Moves a directory under a new parent (for `..` in fd_readdir). */
export function reparent(dir: Directory, parent: Directory): void {
  Object.assign(dir, { parent });
}

/** Is `node` the directory `dir` or somewhere below it? (A rename may not move a directory into itself.) */
export function contains(dir: Directory, node: Directory): boolean {
  if (dir === node) return true;
  for (const child of dir.contents.values()) if (child instanceof Directory && contains(child, node)) return true;
  return false;
}

export const isFile = (n: Inode | undefined): n is File => n instanceof File;
