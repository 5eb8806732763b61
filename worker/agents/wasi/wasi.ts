/**
 * WASI preview1 for agents: `@bjorn3/browser_wasi_shim` 0.4.2 with the imports it gets
 * wrong replaced. Same constructor as the shim's WASI (args, env, fds) plus options; the
 * shim's own import functions stay for everything not listed here (args_get, environ_*,
 * fd_close, fd_prestat_*, fd_renumber, proc_*, sched_yield, random_get); fd_readdir,
 * fd_seek, fd_tell, fd_advise, fd_sync and fd_datasync are the shim's behind a rights check.
 *
 * Rights: every fd_* and path_* function the spec ties to a right (docs.md "rights") needs
 * it in the base rights of the fd it acts on, else NOTCAPABLE (see #need); a kind of fd that
 * never has the right (stdout's fd_seek, a file's fd_readdir) answers NOTCAPABLE too. Checked
 * after BADF (fd not open) and, for path_*, NOTDIR; before anything else, except that
 * fd_read/fd_write/fd_pread/fd_pwrite, fd_filestat_set_size and fd_allocate on an fd without
 * fd_read/fd_write answer BADF first (as read(2), ftruncate(2)).
 *
 * The spec referred to at each function is WebAssembly/WASI `legacy/preview1/docs.md`
 * (witx `wasi_snapshot_preview1.witx`, `typenames.witx`); where it is silent the POSIX
 * call it names ("similar to `openat` in POSIX") decides the errno.
 */
import { ConsoleStdout, Directory, File, OpenDirectory, OpenFile, WASI, wasi, type Fd } from '@bjorn3/browser_wasi_shim';
import { AppError } from '../../../shared';
import { blockUntil } from './block';
import { Metadata, Symlink, contains, lookup, monotonicNs, newDirectory, realtimeNs, reparent, resolve } from './fs';
import { EVENT_SIZE, SUBSCRIPTION_SIZE, readSubscription, writeEvent, writeFdstat, writeFilestat } from './layout';
import { MountTable, type MountOptions, type Quota } from './mounts';
import * as R from './rights';

export interface AgentWasiOptions {
  /**
   * The run's wall-clock deadline (ms, on performance.timeOrigin + performance.now()).
   * A poll_oneoff sleep that would end after it blocks until the deadline and then ends
   * the run with AGENT_TIMEOUT. Absent: sleeps are as long as asked (the pool's
   * termination still bounds them).
   */
  deadline?: number;
  debug?: boolean;
  /**
   * The preopens that are mounts (their roots): a read-only one answers ROFS to creates,
   * writes, truncation, removal, renames, links and time changes; a writable one with
   * `maxBytes` answers NOSPC to what would pass it (fd_write, fd_pwrite,
   * fd_filestat_set_size, fd_allocate, new entries). Renames and links between mounts: XDEV.
   * Preopens not listed are writable without a cap.
   */
  mounts?: readonly MountOptions[];
  /** What each directory entry counts toward a writable mount's cap (default 64). */
  entryBytes?: number;
}

/** What the layer knows of an open descriptor beyond the shim's object. */
interface FdState {
  flags: number;
  base: bigint;
  inheriting: bigint;
}

type ImportFn = (...args: never[]) => number;

const E = wasi;
const has = (rights: bigint, bits: bigint): boolean => (rights & bits) === bits;
const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder('utf-8', { fatal: true });

export class AgentWasi extends WASI {
  readonly #meta = new Metadata();
  readonly #state = new WeakMap<Fd, FdState>();
  readonly #deadline: number | undefined;
  readonly #mounts: MountTable;

  constructor(args: string[], env: string[], fds: Fd[], options: AgentWasiOptions = {}) {
    super(args, env, fds, { debug: options.debug ?? false });
    this.#deadline = options.deadline;
    this.#mounts = new MountTable(options.mounts ?? [], options.entryBytes ?? 64);
    const shim = { ...this.wasiImport };
    Object.assign(this.wasiImport, this.#imports(shim));
  }

  /** The writable mount whose cap first refused a write (NOSPC), or null. */
  get fullMount(): Quota | null {
    return this.#mounts.full;
  }

  /** The metadata (timestamps, link counts) of the tree; for code that reads results back. */
  get metadata(): Metadata {
    return this.#meta;
  }

  // ---------------------------------------------------------------- helpers

  #view(): DataView {
    return new DataView(this.inst.exports.memory.buffer);
  }

  #bytes(): Uint8Array {
    return new Uint8Array(this.inst.exports.memory.buffer);
  }

  /** A guest string; null when it is not UTF-8 (ILSEQ). */
  #str(ptr: number, len: number): string | null {
    try {
      return utf8Strict.decode(this.#bytes().subarray(ptr, ptr + len));
    } catch {
      return null;
    }
  }

  /** Bytes an iovec array asks to write. */
  #iovBytes(iovs: number, n: number): number {
    const v = this.#view();
    let total = 0;
    for (let i = 0; i < n; i++) total += v.getUint32(iovs + 8 * i + 4, true);
    return total;
  }

  /** May a write of `len` bytes at `at` (bytes) grow `f` within its mount's cap? (NOSPC otherwise.) */
  #room(f: OpenFile, at: bigint, len: number): boolean {
    const growth = Number(at) + len - Number(f.file.size);
    return growth <= 0 || this.#mounts.grow(f.file, growth);
  }

  /** A new entry in `dir`: ROFS in a read-only mount, NOSPC past a cap; 0 when it may be made. */
  #newEntry(dir: Directory, extra = 0): number {
    if (this.#mounts.readonly(dir)) return E.ERRNO_ROFS;
    return this.#mounts.grow(dir, this.#mounts.entryBytes + extra) ? 0 : E.ERRNO_NOSPC;
  }

  /** An entry of `dir` named `entry` goes away: its bytes leave the mount's count when no other link holds it. */
  #dropEntry(dir: Directory, entry: object): void {
    this.#mounts.shrink(dir, this.#mounts.entryBytes);
    if (entry instanceof File && this.#meta.links(entry) <= 0) this.#mounts.shrink(dir, entry.data.byteLength);
  }

  #st(fd: Fd): FdState {
    let s = this.#state.get(fd);
    if (!s) {
      s = defaultState(fd);
      this.#state.set(fd, s);
    }
    return s;
  }

  /**
   * The one rights check: 0 when the fd's base rights hold every bit of `rights` (or, when
   * given, every bit of `orRights`), else NOTCAPABLE. `rights` are the shim's RIGHTS_* bits.
   */
  #need(f: Fd, rights: number, orRights?: number): number {
    const base = this.#st(f).base;
    if (has(base, BigInt(rights)) || (orRights !== undefined && has(base, BigInt(orRights)))) return 0;
    return E.ERRNO_NOTCAPABLE;
  }

  /** The directory `fd` is, holding `rights`: BADF when not open, NOTDIR when not a directory, NOTCAPABLE when a right is missing. */
  #dir(fd: number, rights: number): { ret: number; dir: Directory | null; st: FdState | null } {
    const f = this.fds[fd];
    if (f === undefined) return { ret: E.ERRNO_BADF, dir: null, st: null };
    if (!(f instanceof OpenDirectory)) return { ret: E.ERRNO_NOTDIR, dir: null, st: null };
    const ret = this.#need(f, rights);
    if (ret !== 0) return { ret, dir: null, st: null };
    return { ret: 0, dir: f.dir, st: this.#st(f) };
  }

  /** The object timestamps hang on: the inode of a file or directory fd, else the fd. */
  #node(f: Fd): object {
    if (f instanceof OpenFile) return f.file;
    if (f instanceof OpenDirectory) return f.dir;
    return f;
  }

  #setTimes(node: object, atim: bigint, mtim: bigint, fst: number): number {
    // fstflags (docs.md "fstflags"): ATIM with ATIM_NOW, or MTIM with MTIM_NOW, is
    // contradictory: INVAL (as utimensat). The shim answers NOTSUP for any fst_flags.
    if ((fst & ~R.ALL_FSTFLAGS) !== 0) return E.ERRNO_INVAL;
    if ((fst & E.FSTFLAGS_ATIM) !== 0 && (fst & E.FSTFLAGS_ATIM_NOW) !== 0) return E.ERRNO_INVAL;
    if ((fst & E.FSTFLAGS_MTIM) !== 0 && (fst & E.FSTFLAGS_MTIM_NOW) !== 0) return E.ERRNO_INVAL;
    const t = this.#meta.times(node);
    const now = realtimeNs();
    if (fst & E.FSTFLAGS_ATIM) t.atim = atim;
    if (fst & E.FSTFLAGS_ATIM_NOW) t.atim = now;
    if (fst & E.FSTFLAGS_MTIM) t.mtim = mtim;
    if (fst & E.FSTFLAGS_MTIM_NOW) t.mtim = now;
    t.ctim = now;
    return 0;
  }

  // ---------------------------------------------------------------- imports

  #imports(shim: Record<string, (...args: never[]) => unknown>): Record<string, ImportFn> {
    const call = (name: string, ...args: unknown[]): number => (shim[name] as (...a: unknown[]) => number)(...args);
    /** The shim's `name` behind the check that the fd (its first argument) holds `right`. */
    const guarded = (name: string, right: number) => (fd: number, ...rest: unknown[]): number => {
      const f = this.fds[fd];
      if (f === undefined) return E.ERRNO_BADF;
      return this.#need(f, right) || call(name, fd, ...rest);
    };

    return {
      /**
       * args_sizes_get: the buffer size is the UTF-8 bytes of every argument plus its NUL.
       * Deviation: the shim counts UTF-16 code units (`arg.length`), so a non-ASCII argument
       * overflows the buffer args_get then fills. (environ_sizes_get in the shim counts bytes.)
       */
      args_sizes_get: (argc: number, bufSize: number): number => {
        const v = this.#view();
        v.setUint32(argc, this.args.length, true);
        v.setUint32(bufSize, this.args.reduce((n, a) => n + utf8.encode(a).byteLength + 1, 0), true);
        return 0;
      },

      /** clock_res_get: "For unsupported clocks, return errno::inval" (the shim: NOSYS). */
      clock_res_get: (id: number, ptr: number): number =>
        id === E.CLOCKID_REALTIME || id === E.CLOCKID_MONOTONIC ? call('clock_res_get', id, ptr) : E.ERRNO_INVAL,

      /**
       * clock_time_get: INVAL for a clock we do not have (the shim writes 0 and answers
       * success). Realtime is the clock file timestamps use (sub-millisecond; the shim's is
       * Date.now() in whole milliseconds), so a program comparing the two agrees with itself.
       */
      clock_time_get: (id: number, _precision: bigint, ptr: number): number => {
        if (id === E.CLOCKID_REALTIME) this.#view().setBigUint64(ptr, realtimeNs(), true);
        else if (id === E.CLOCKID_MONOTONIC) this.#view().setBigUint64(ptr, monotonicNs(), true);
        else return E.ERRNO_INVAL;
        return 0;
      },

      /**
       * fd_fdstat_get: filetype, the fd's flags (append etc. as opened or set), and rights
       * that say what the fd can do. Deviation: the shim reports rights 0 and flags 0.
       */
      fd_fdstat_get: (fd: number, ptr: number): number => {
        const f = this.fds[fd];
        if (f === undefined) return E.ERRNO_BADF;
        const { ret, fdstat } = f.fd_fdstat_get();
        if (fdstat === null) return ret;
        const s = this.#st(f);
        writeFdstat(this.#view(), ptr, fdstat.fs_filetype, s.flags, s.base, s.inheriting);
        return 0;
      },

      /**
       * fd_fdstat_set_flags: the fdflags are kept and honoured (append on fd_write).
       * Unknown bits: INVAL. Deviation: the shim answers NOTSUP for every fd.
       */
      fd_fdstat_set_flags: (fd: number, flags: number): number => {
        const f = this.fds[fd];
        if (f === undefined) return E.ERRNO_BADF;
        const denied = this.#need(f, E.RIGHTS_FD_FDSTAT_SET_FLAGS);
        if (denied !== 0) return denied;
        if ((flags & ~R.ALL_FDFLAGS) !== 0) return E.ERRNO_INVAL;
        this.#st(f).flags = flags;
        return 0;
      },

      /** fd_fdstat_set_rights: "can only be used to remove rights, and returns errno::notcapable" when adding. */
      fd_fdstat_set_rights: (fd: number, base: bigint, inheriting: bigint): number => {
        const f = this.fds[fd];
        if (f === undefined) return E.ERRNO_BADF;
        const s = this.#st(f);
        if ((base & ~s.base) !== 0n || (inheriting & ~s.inheriting) !== 0n) return E.ERRNO_NOTCAPABLE;
        s.base = base;
        s.inheriting = inheriting;
        return 0;
      },

      /** fd_filestat_get: the spec's layout (the shim's puts the times at wrong offsets) with kept times and link counts. */
      fd_filestat_get: (fd: number, ptr: number): number => {
        const f = this.fds[fd];
        if (f === undefined) return E.ERRNO_BADF;
        const denied = this.#need(f, E.RIGHTS_FD_FILESTAT_GET);
        if (denied !== 0) return denied;
        const { ret, filestat } = f.fd_filestat_get();
        if (filestat === null) return ret;
        const node = this.#node(f);
        writeFilestat(this.#view(), ptr, {
          ino: filestat.ino, filetype: filestat.filetype, size: filestat.size,
          nlink: BigInt(this.#meta.links(node)), ...this.#meta.times(node),
        });
        return 0;
      },

      /** fd_filestat_set_size: needs the fd open for writing (BADF, as ftruncate), then `rights::fd_filestat_set_size`; updates mtime. */
      fd_filestat_set_size: (fd: number, size: bigint): number => {
        const f = this.fds[fd];
        if (f === undefined) return E.ERRNO_BADF;
        if (f instanceof OpenFile && !has(this.#st(f).base, BigInt(E.RIGHTS_FD_WRITE))) return E.ERRNO_BADF;
        const denied = this.#need(f, E.RIGHTS_FD_FILESTAT_SET_SIZE);
        if (denied !== 0) return denied;
        const before = f instanceof OpenFile ? Number(f.file.size) : 0;
        if (f instanceof OpenFile && !this.#room(f, size, 0)) return E.ERRNO_NOSPC;
        const ret = f.fd_filestat_set_size(size);
        if (ret === 0) this.#meta.modified(this.#node(f));
        if (f instanceof OpenFile) this.#mounts.shrink(f.file, before - Number(f.file.size));
        return ret;
      },

      /** fd_filestat_set_times: kept; fst_flags validated (see #setTimes). The shim: NOTSUP. */
      fd_filestat_set_times: (fd: number, atim: bigint, mtim: bigint, fst: number): number => {
        const f = this.fds[fd];
        if (f === undefined) return E.ERRNO_BADF;
        const denied = this.#need(f, E.RIGHTS_FD_FILESTAT_SET_TIMES);
        if (denied !== 0) return denied;
        const node = this.#node(f);
        if (this.#mounts.readonly(node)) return E.ERRNO_ROFS;
        return this.#setTimes(node, atim, mtim, fst);
      },

      /** fd_allocate: needs the fd open for writing (BADF), then `rights::fd_allocate`; the shim grows read-only files too. */
      fd_allocate: (fd: number, offset: bigint, len: bigint): number => {
        const f = this.fds[fd];
        if (f === undefined) return E.ERRNO_BADF;
        if (f instanceof OpenFile && !has(this.#st(f).base, BigInt(E.RIGHTS_FD_WRITE))) return E.ERRNO_BADF;
        const denied = this.#need(f, E.RIGHTS_FD_ALLOCATE);
        if (denied !== 0) return denied;
        if (f instanceof OpenFile && !this.#room(f, offset + len, 0)) return E.ERRNO_NOSPC;
        const ret = f.fd_allocate(offset, len);
        if (ret === 0) this.#meta.modified(this.#node(f));
        return ret;
      },

      /** fd_read: needs `rights::fd_read` (BADF otherwise, as read(2) on an fd not open for reading). */
      fd_read: (fd: number, iovs: number, n: number, nread: number): number => {
        const f = this.fds[fd];
        if (f === undefined) return E.ERRNO_BADF;
        if (!has(this.#st(f).base, R.READ_BITS)) return E.ERRNO_BADF;
        return call('fd_read', fd, iovs, n, nread);
      },

      /** fd_pread: BADF without `rights::fd_read`; "If rights::fd_seek is set, includes the right to invoke fd_pread": NOTCAPABLE without it. */
      fd_pread: (fd: number, iovs: number, n: number, offset: bigint, nread: number): number => {
        const f = this.fds[fd];
        if (f === undefined) return E.ERRNO_BADF;
        if (!has(this.#st(f).base, R.READ_BITS)) return E.ERRNO_BADF;
        return this.#need(f, E.RIGHTS_FD_SEEK) || call('fd_pread', fd, iovs, n, offset, nread);
      },

      /**
       * fd_write: with fdflags.append every write goes to the end of the file first
       * (docs.md "fdflags.append": "Data written to the file is always appended to the
       * file's end"). Deviation: the shim only seeks to the end once, at path_open, and
       * forgets the flag. Needs `rights::fd_write` (BADF otherwise). Updates mtime.
       */
      fd_write: (fd: number, iovs: number, n: number, nwritten: number): number => {
        const f = this.fds[fd];
        if (f === undefined) return E.ERRNO_BADF;
        const s = this.#st(f);
        if (!has(s.base, BigInt(E.RIGHTS_FD_WRITE))) return E.ERRNO_BADF;
        if (f instanceof OpenFile) {
          if ((s.flags & E.FDFLAGS_APPEND) !== 0) f.file_pos = f.file.size;
          if (!this.#room(f, f.file_pos, this.#iovBytes(iovs, n))) return E.ERRNO_NOSPC;
        }
        const ret = call('fd_write', fd, iovs, n, nwritten);
        if (ret === 0 && f instanceof OpenFile) this.#meta.modified(f.file);
        return ret;
      },

      /** fd_pwrite: BADF without `rights::fd_write`, NOTCAPABLE without `rights::fd_seek` (as fd_pread). */
      fd_pwrite: (fd: number, iovs: number, n: number, offset: bigint, nwritten: number): number => {
        const f = this.fds[fd];
        if (f === undefined) return E.ERRNO_BADF;
        if (!has(this.#st(f).base, BigInt(E.RIGHTS_FD_WRITE))) return E.ERRNO_BADF;
        const denied = this.#need(f, E.RIGHTS_FD_SEEK);
        if (denied !== 0) return denied;
        if (f instanceof OpenFile && !this.#room(f, offset, this.#iovBytes(iovs, n))) return E.ERRNO_NOSPC;
        const ret = call('fd_pwrite', fd, iovs, n, offset, nwritten);
        if (ret === 0 && f instanceof OpenFile) this.#meta.modified(f.file);
        return ret;
      },

      /**
       * fd_seek: `rights::fd_seek`; a seek of 0 from the current offset only tells, so
       * `rights::fd_tell` does for it (as wasmtime's wasi-common). fd_tell: `rights::fd_tell`,
       * or `rights::fd_seek`, which "implies rights::fd_tell". Then the shim's.
       */
      fd_seek: (fd: number, offset: bigint, whence: number, out: number): number => {
        const f = this.fds[fd];
        if (f === undefined) return E.ERRNO_BADF;
        const tells = offset === 0n && whence === E.WHENCE_CUR;
        return this.#need(f, tells ? E.RIGHTS_FD_TELL : E.RIGHTS_FD_SEEK, E.RIGHTS_FD_SEEK) || call('fd_seek', fd, offset, whence, out);
      },
      fd_tell: (fd: number, out: number): number => {
        const f = this.fds[fd];
        if (f === undefined) return E.ERRNO_BADF;
        return this.#need(f, E.RIGHTS_FD_TELL, E.RIGHTS_FD_SEEK) || call('fd_tell', fd, out);
      },
      /** fd_advise, fd_sync, fd_datasync, fd_readdir: the shim's, behind the right of the same name. */
      fd_advise: guarded('fd_advise', E.RIGHTS_FD_ADVISE),
      fd_sync: guarded('fd_sync', E.RIGHTS_FD_SYNC),
      fd_datasync: guarded('fd_datasync', E.RIGHTS_FD_DATASYNC),
      fd_readdir: guarded('fd_readdir', E.RIGHTS_FD_READDIR),

      /**
       * path_open, with symlinks and validation. oflags, fdflags or lookupflags with unknown
       * bits: INVAL; `directory` with `creat`, `excl` or `trunc`: INVAL; a last component that
       * is a link not followed (no symlink_follow): LOOP (as O_NOFOLLOW); `creat` on a path
       * ending in `/`: ISDIR; a directory opened for writing or with `trunc`: ISDIR. The fd's
       * rights are those asked for, within the directory's inheriting rights and what the
       * file can do; its fdflags are kept (append). The directory fd needs `rights::path_open`,
       * with `creat` also `path_create_file`, with `trunc` also `path_filestat_set_size` (the
       * spec: "includes the right to invoke path_open with oflags::trunc"). Deviation: the
       * shim ignores symlinks, rights and kept flags.
       */
      path_open: (fd: number, dirflags: number, pathPtr: number, pathLen: number, oflags: number,
        base: bigint, inheriting: bigint, fdflags: number, out: number): number => {
        const d = this.#dir(fd, E.RIGHTS_PATH_OPEN
          | ((oflags & E.OFLAGS_CREAT) !== 0 ? E.RIGHTS_PATH_CREATE_FILE : 0)
          | ((oflags & E.OFLAGS_TRUNC) !== 0 ? E.RIGHTS_PATH_FILESTAT_SET_SIZE : 0));
        if (!d.dir || !d.st) return d.ret;
        if ((oflags & ~R.ALL_OFLAGS) !== 0 || (fdflags & ~R.ALL_FDFLAGS) !== 0 || (dirflags & ~R.ALL_LOOKUPFLAGS) !== 0) return E.ERRNO_INVAL;
        if ((oflags & E.OFLAGS_DIRECTORY) !== 0 && (oflags & (E.OFLAGS_CREAT | E.OFLAGS_EXCL | E.OFLAGS_TRUNC)) !== 0) return E.ERRNO_INVAL;
        const path = this.#str(pathPtr, pathLen);
        if (path === null) return E.ERRNO_ILSEQ;
        const r = lookup(d.dir, path, (dirflags & 1) !== 0);
        if (!r.at) return r.ret;
        const { dir, name, trailingSlash } = r.at;
        let entry = r.at.entry;
        if (entry instanceof Symlink) return E.ERRNO_LOOP;
        if (this.#mounts.readonly(dir) && entry !== undefined && ((oflags & E.OFLAGS_TRUNC) !== 0 || has(base, BigInt(E.RIGHTS_FD_WRITE)))) {
          // open(2) for writing on a read-only file system (a directory asked for writing stays ISDIR below).
          if (!(entry instanceof Directory)) return E.ERRNO_ROFS;
        }
        if (entry === undefined) {
          if ((oflags & E.OFLAGS_CREAT) === 0 || name === null) return E.ERRNO_NOENT;
          if (trailingSlash) return E.ERRNO_ISDIR;
          const refused = this.#newEntry(dir);
          if (refused !== 0) return refused;
          const file = new File(new Uint8Array(0));
          dir.contents.set(name, file);
          this.#mounts.adopt(file, dir);
          this.#meta.created(file);
          this.#meta.modified(dir);
          entry = file;
        } else if ((oflags & E.OFLAGS_CREAT) !== 0 && (oflags & E.OFLAGS_EXCL) !== 0) {
          return E.ERRNO_EXIST;
        }
        let opened: Fd;
        let applicable: bigint;
        if (entry instanceof Directory) {
          if ((oflags & E.OFLAGS_TRUNC) !== 0 || has(base, BigInt(E.RIGHTS_FD_WRITE))) return E.ERRNO_ISDIR;
          opened = new OpenDirectory(entry);
          applicable = R.DIRECTORY;
        } else {
          if ((oflags & E.OFLAGS_DIRECTORY) !== 0 || trailingSlash) return E.ERRNO_NOTDIR;
          const before = entry instanceof File ? entry.data.byteLength : 0;
          const { ret, fd_obj } = entry.path_open(oflags, base, fdflags);
          if (fd_obj === null) return ret;
          if ((oflags & E.OFLAGS_TRUNC) !== 0) {
            this.#meta.modified(entry);
            this.#mounts.shrink(entry, before);
          }
          opened = fd_obj;
          applicable = entry instanceof File && entry.readonly ? R.FILE_READ : R.FILE_READ | R.FILE_WRITE;
        }
        this.#state.set(opened, { flags: fdflags, base: base & d.st.inheriting & applicable, inheriting: inheriting & d.st.inheriting });
        this.fds.push(opened);
        this.#view().setUint32(out, this.fds.length - 1, true);
        return 0;
      },

      /** path_create_directory: EXIST for any existing entry, a dangling link included (as mkdirat). */
      path_create_directory: (fd: number, pathPtr: number, pathLen: number): number => {
        const d = this.#dir(fd, E.RIGHTS_PATH_CREATE_DIRECTORY);
        if (!d.dir) return d.ret;
        const path = this.#str(pathPtr, pathLen);
        if (path === null) return E.ERRNO_ILSEQ;
        const r = lookup(d.dir, path, false);
        if (!r.at) return r.ret;
        const { dir, name, entry } = r.at;
        if (entry !== undefined || name === null) return E.ERRNO_EXIST;
        const refused = this.#newEntry(dir);
        if (refused !== 0) return refused;
        const child = newDirectory(dir);
        dir.contents.set(name, child);
        this.#mounts.adopt(child, dir);
        this.#meta.created(child);
        this.#meta.modified(dir);
        return 0;
      },

      /** path_filestat_get: follows the last link only with lookupflags.symlink_follow (lstat vs stat). */
      path_filestat_get: (fd: number, flags: number, pathPtr: number, pathLen: number, ptr: number): number => {
        const d = this.#dir(fd, E.RIGHTS_PATH_FILESTAT_GET);
        if (!d.dir) return d.ret;
        if ((flags & ~R.ALL_LOOKUPFLAGS) !== 0) return E.ERRNO_INVAL;
        const path = this.#str(pathPtr, pathLen);
        if (path === null) return E.ERRNO_ILSEQ;
        const { ret, node } = resolve(d.dir, path, (flags & 1) !== 0);
        if (!node) return ret;
        writeFilestat(this.#view(), ptr, this.#meta.stat(node));
        return 0;
      },

      /** path_filestat_set_times: as fd_filestat_set_times, on a path (utimensat). */
      path_filestat_set_times: (fd: number, flags: number, pathPtr: number, pathLen: number, atim: bigint, mtim: bigint, fst: number): number => {
        const d = this.#dir(fd, E.RIGHTS_PATH_FILESTAT_SET_TIMES);
        if (!d.dir) return d.ret;
        if ((flags & ~R.ALL_LOOKUPFLAGS) !== 0) return E.ERRNO_INVAL;
        const path = this.#str(pathPtr, pathLen);
        if (path === null) return E.ERRNO_ILSEQ;
        const { ret, node } = resolve(d.dir, path, (flags & 1) !== 0);
        if (!node) return ret;
        if (this.#mounts.readonly(node)) return E.ERRNO_ROFS;
        return this.#setTimes(node, atim, mtim, fst);
      },

      /**
       * path_link: a new name for an existing inode. Onto an existing path: EXIST (as
       * linkat; the shim replaces the target). A directory as the source: PERM. The source's
       * last link is followed only with symlink_follow.
       */
      path_link: (oldFd: number, oldFlags: number, oldPtr: number, oldLen: number, newFd: number, newPtr: number, newLen: number): number => {
        const from = this.#dir(oldFd, E.RIGHTS_PATH_LINK_SOURCE);
        if (!from.dir) return from.ret;
        const to = this.#dir(newFd, E.RIGHTS_PATH_LINK_TARGET);
        if (!to.dir) return to.ret;
        if ((oldFlags & ~R.ALL_LOOKUPFLAGS) !== 0) return E.ERRNO_INVAL;
        const oldPath = this.#str(oldPtr, oldLen);
        const newPath = this.#str(newPtr, newLen);
        if (oldPath === null || newPath === null) return E.ERRNO_ILSEQ;
        const src = resolve(from.dir, oldPath, (oldFlags & 1) !== 0);
        if (!src.node) return src.ret;
        if (src.node instanceof Directory) return E.ERRNO_PERM;
        const r = lookup(to.dir, newPath, false);
        if (!r.at) return r.ret;
        const { dir, name, entry, trailingSlash } = r.at;
        if (entry !== undefined || name === null) return E.ERRNO_EXIST;
        if (trailingSlash) return E.ERRNO_NOENT;
        if (this.#mounts.readonly(dir)) return E.ERRNO_ROFS;
        if (this.#mounts.quota(dir) !== this.#mounts.quota(src.node)) return E.ERRNO_XDEV;
        const refused = this.#newEntry(dir);
        if (refused !== 0) return refused;
        dir.contents.set(name, src.node);
        this.#meta.addLink(src.node, 1);
        this.#meta.changed(src.node);
        this.#meta.modified(dir);
        return 0;
      },

      /**
       * path_rename (renameat): never follows the last component. A trailing `/` on either
       * path needs the source to be a directory (NOTDIR for a file; the shim answers NOENT
       * for a directory). Onto an existing target: a file replaces a file; a directory
       * replaces an empty directory (NOTEMPTY otherwise); directory onto file: NOTDIR;
       * file onto directory: ISDIR; a directory into itself: INVAL; the same inode: nothing.
       */
      path_rename: (fd: number, oldPtr: number, oldLen: number, newFd: number, newPtr: number, newLen: number): number => {
        const from = this.#dir(fd, E.RIGHTS_PATH_RENAME_SOURCE);
        if (!from.dir) return from.ret;
        const to = this.#dir(newFd, E.RIGHTS_PATH_RENAME_TARGET);
        if (!to.dir) return to.ret;
        const oldPath = this.#str(oldPtr, oldLen);
        const newPath = this.#str(newPtr, newLen);
        if (oldPath === null || newPath === null) return E.ERRNO_ILSEQ;
        const a = lookup(from.dir, oldPath, false);
        if (!a.at) return a.ret;
        const b = lookup(to.dir, newPath, false);
        if (!b.at) return b.ret;
        const src = a.at.entry;
        if (src === undefined) return E.ERRNO_NOENT;
        if (a.at.name === null || b.at.name === null) return E.ERRNO_BUSY;
        const srcIsDir = src instanceof Directory;
        if ((a.at.trailingSlash || b.at.trailingSlash) && !srcIsDir) return E.ERRNO_NOTDIR;
        const dst = b.at.entry;
        if (this.#mounts.readonly(a.at.dir) || this.#mounts.readonly(b.at.dir)) return E.ERRNO_ROFS;
        if (this.#mounts.quota(a.at.dir) !== this.#mounts.quota(b.at.dir)) return E.ERRNO_XDEV;
        if (dst === src) return 0;
        if (srcIsDir && contains(src, b.at.dir)) return E.ERRNO_INVAL;
        if (dst !== undefined) {
          const dstIsDir = dst instanceof Directory;
          if (srcIsDir && !dstIsDir) return E.ERRNO_NOTDIR;
          if (!srcIsDir && dstIsDir) return E.ERRNO_ISDIR;
          if (dstIsDir && dst.contents.size > 0) return E.ERRNO_NOTEMPTY;
          this.#meta.addLink(dst, -1);
          this.#meta.changed(dst);
          this.#dropEntry(b.at.dir, dst);
        }
        a.at.dir.contents.delete(a.at.name);
        b.at.dir.contents.set(b.at.name, src);
        if (src instanceof Directory) reparent(src, b.at.dir);
        this.#meta.changed(src);
        this.#meta.modified(a.at.dir);
        this.#meta.modified(b.at.dir);
        return 0;
      },

      /** path_symlink: an in-memory link holding `old_path` as written. The shim: NOTSUP. */
      path_symlink: (oldPtr: number, oldLen: number, fd: number, newPtr: number, newLen: number): number => {
        const d = this.#dir(fd, E.RIGHTS_PATH_SYMLINK);
        if (!d.dir) return d.ret;
        const target = this.#str(oldPtr, oldLen);
        const path = this.#str(newPtr, newLen);
        if (target === null || path === null) return E.ERRNO_ILSEQ;
        if (target.includes('\0')) return E.ERRNO_INVAL;
        const r = lookup(d.dir, path, false);
        if (!r.at) return r.ret;
        const { dir, name, entry, trailingSlash } = r.at;
        if (entry !== undefined || name === null) return E.ERRNO_EXIST;
        if (trailingSlash) return E.ERRNO_NOENT;
        const refused = this.#newEntry(dir, utf8.encode(target).byteLength);
        if (refused !== 0) return refused;
        const link = new Symlink(target);
        dir.contents.set(name, link);
        this.#mounts.adopt(link, dir);
        this.#meta.created(link);
        this.#meta.modified(dir);
        return 0;
      },

      /**
       * path_readlink: the link's contents; "If buf is not large enough to contain the
       * contents of the link, the first buf_len bytes will be written" (the shim answers
       * BADF there). Not a link: INVAL (readlinkat).
       */
      path_readlink: (fd: number, pathPtr: number, pathLen: number, buf: number, bufLen: number, nread: number): number => {
        const d = this.#dir(fd, E.RIGHTS_PATH_READLINK);
        if (!d.dir) return d.ret;
        const path = this.#str(pathPtr, pathLen);
        if (path === null) return E.ERRNO_ILSEQ;
        const { ret, node } = resolve(d.dir, path, false);
        if (!node) return ret;
        if (!(node instanceof Symlink)) return E.ERRNO_INVAL;
        const data = utf8.encode(node.target).subarray(0, bufLen);
        this.#bytes().set(data, buf);
        this.#view().setUint32(nread, data.byteLength, true);
        return 0;
      },

      /** path_unlink_file: ISDIR for a directory; a link is removed, not followed; a trailing `/` on a file: NOTDIR. */
      path_unlink_file: (fd: number, pathPtr: number, pathLen: number): number => {
        const d = this.#dir(fd, E.RIGHTS_PATH_UNLINK_FILE);
        if (!d.dir) return d.ret;
        const path = this.#str(pathPtr, pathLen);
        if (path === null) return E.ERRNO_ILSEQ;
        const r = lookup(d.dir, path, false);
        if (!r.at) return r.ret;
        const { dir, name, entry, trailingSlash } = r.at;
        if (entry === undefined) return E.ERRNO_NOENT;
        if (entry instanceof Directory || name === null) return E.ERRNO_ISDIR;
        if (trailingSlash) return E.ERRNO_NOTDIR;
        if (this.#mounts.readonly(dir)) return E.ERRNO_ROFS;
        dir.contents.delete(name);
        this.#meta.addLink(entry, -1);
        this.#dropEntry(dir, entry);
        this.#meta.changed(entry);
        this.#meta.modified(dir);
        return 0;
      },

      /** path_remove_directory: NOTEMPTY, NOTDIR for a non-directory (a link too), INVAL for `.`. */
      path_remove_directory: (fd: number, pathPtr: number, pathLen: number): number => {
        const d = this.#dir(fd, E.RIGHTS_PATH_REMOVE_DIRECTORY);
        if (!d.dir) return d.ret;
        const path = this.#str(pathPtr, pathLen);
        if (path === null) return E.ERRNO_ILSEQ;
        const r = lookup(d.dir, path, false);
        if (!r.at) return r.ret;
        const { dir, name, entry } = r.at;
        if (entry === undefined) return E.ERRNO_NOENT;
        if (name === null) return E.ERRNO_INVAL;
        if (!(entry instanceof Directory)) return E.ERRNO_NOTDIR;
        if (entry.contents.size > 0) return E.ERRNO_NOTEMPTY;
        if (this.#mounts.readonly(dir)) return E.ERRNO_ROFS;
        dir.contents.delete(name);
        this.#dropEntry(dir, entry);
        this.#meta.modified(dir);
        return 0;
      },

      poll_oneoff: (inPtr: number, outPtr: number, n: number, neventsPtr: number): number => this.#poll(inPtr, outPtr, n, neventsPtr),

      /**
       * sock_*: agents have no sockets, so no fd is one: BADF for an fd that is not open,
       * NOTSOCK for one that is (as accept/recv/send/shutdown on a non-socket).
       * Deviation: the shim throws "sockets not supported", trapping the agent.
       */
      sock_accept: (fd: number): number => this.#notSocket(fd),
      sock_recv: (fd: number): number => this.#notSocket(fd),
      sock_send: (fd: number): number => this.#notSocket(fd),
      sock_shutdown: (fd: number): number => this.#notSocket(fd),
    };
  }

  #notSocket(fd: number): number {
    return this.fds[fd] === undefined ? E.ERRNO_BADF : E.ERRNO_NOTSOCK;
  }

  /**
   * poll_oneoff with any number of subscriptions (the shim: one clock only, NOTSUP
   * otherwise, and it busy-waits). nsubscriptions 0: INVAL; an unknown event type: INVAL.
   * fd_read / fd_write on the fds we have are ready at once (files, stdin, stdout,
   * stderr never block): their events come back without waiting, nbytes = the bytes
   * left to read (0 for writes). An fd that is not open, or not open for that direction:
   * an event with error BADF. Otherwise the earliest clock (relative or absolute,
   * realtime or monotonic) is waited for (see block.ts), and every clock due by then
   * fires. An unsupported clock: an event with error INVAL. Events are written in
   * subscription order.
   */
  #poll(inPtr: number, outPtr: number, n: number, neventsPtr: number): number {
    if (n === 0) return E.ERRNO_INVAL;
    const view = this.#view();
    type Ev = { i: number; userdata: bigint; error: number; type: number; nbytes: bigint };
    const ready: Ev[] = [];
    const clocks: { i: number; userdata: bigint; at: number }[] = [];
    const nowMs = performance.now();
    for (let i = 0; i < n; i++) {
      const s = readSubscription(view, inPtr + i * SUBSCRIPTION_SIZE);
      if (s.kind === 'unknown') return E.ERRNO_INVAL;
      if (s.kind === 'clock') {
        const ms = Number(s.timeout) / 1e6;
        if (s.clock === E.CLOCKID_MONOTONIC) clocks.push({ i, userdata: s.userdata, at: s.abstime ? ms : nowMs + ms });
        else if (s.clock === E.CLOCKID_REALTIME) clocks.push({ i, userdata: s.userdata, at: s.abstime ? nowMs + (ms - Number(realtimeNs()) / 1e6) : nowMs + ms });
        else ready.push({ i, userdata: s.userdata, error: E.ERRNO_INVAL, type: s.tag, nbytes: 0n });
        continue;
      }
      ready.push({ i, userdata: s.userdata, type: s.tag, ...this.#readiness(s.fd, s.tag === E.EVENTTYPE_FD_READ) });
    }
    if (ready.length === 0) {
      const earliest = Math.min(...clocks.map((c) => c.at));
      const wallNow = performance.timeOrigin + performance.now();
      if (this.#deadline !== undefined && wallNow + (earliest - performance.now()) > this.#deadline) {
        blockUntil(performance.now() + Math.max(0, this.#deadline - wallNow));
        throw new AppError('AGENT_TIMEOUT', 'The agent slept in poll_oneoff past its wall-clock deadline; raise limits.timeoutMs or sleep less.', {
          deadline: this.#deadline,
        });
      }
      blockUntil(earliest);
    }
    const due = performance.now();
    for (const c of clocks) if (c.at <= due) ready.push({ i: c.i, userdata: c.userdata, error: 0, type: E.EVENTTYPE_CLOCK, nbytes: 0n });
    ready.sort((x, y) => x.i - y.i);
    const out = this.#view();
    ready.forEach((e, k) => writeEvent(out, outPtr + k * EVENT_SIZE, e.userdata, e.error, e.type, e.nbytes));
    out.setUint32(neventsPtr, ready.length, true);
    return 0;
  }

  #readiness(fd: number, read: boolean): { error: number; nbytes: bigint } {
    const f = this.fds[fd];
    if (f === undefined) return { error: E.ERRNO_BADF, nbytes: 0n };
    const s = this.#st(f);
    if (read) {
      if (!has(s.base, R.READ_BITS)) return { error: E.ERRNO_BADF, nbytes: 0n };
      const left = f instanceof OpenFile ? f.file.size - f.file_pos : 0n;
      return { error: 0, nbytes: left > 0n ? left : 0n };
    }
    if (!has(s.base, BigInt(E.RIGHTS_FD_WRITE))) return { error: E.ERRNO_BADF, nbytes: 0n };
    return { error: 0, nbytes: 0n };
  }
}

/** Rights and flags of an fd the layer was given (not opened through path_open). */
function defaultState(fd: Fd): FdState {
  if (fd instanceof OpenFile) {
    const base = fd.file.readonly ? R.FILE_READ : R.FILE_READ | R.FILE_WRITE;
    return { flags: 0, base, inheriting: base };
  }
  if (fd instanceof OpenDirectory) return { flags: 0, base: R.DIRECTORY, inheriting: R.DIRECTORY_INHERITING };
  if (fd instanceof ConsoleStdout) return { flags: 0, base: R.CONSOLE_OUT, inheriting: R.CONSOLE_OUT };
  // An fd kind the layer does not know (an OPFS file, say): leave the checks to it.
  return { flags: 0, base: R.FILE_READ | R.FILE_WRITE, inheriting: 0n };
}

