/**
 * AgentWasi's import functions called directly on a real WebAssembly.Memory: the errno each
 * returns and the bytes each writes, at the offsets WASI preview1 (legacy/preview1/docs.md)
 * lays out. One test per fix to the shim.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConsoleStdout, File, OpenFile, PreopenDirectory, WASI, wasi as W, type Fd } from '@bjorn3/browser_wasi_shim';
import { AppError } from '../../../shared';
import { AgentWasi, Symlink } from '.';

type Fn = (...args: (number | bigint)[]) => number;

function setup(opts: { args?: string[]; files?: Record<string, string>; stdin?: string; deadline?: number } = {}) {
  const memory = new WebAssembly.Memory({ initial: 1 });
  const scratch = new PreopenDirectory('/scratch', new Map(Object.entries(opts.files ?? {}).map(([k, v]) => [k, new File(new TextEncoder().encode(v))])));
  const fds: Fd[] = [new OpenFile(new File(new TextEncoder().encode(opts.stdin ?? ''), { readonly: true })), new ConsoleStdout(() => undefined), new ConsoleStdout(() => undefined), scratch];
  const w = new AgentWasi(['agent', ...(opts.args ?? [])], [], fds, { deadline: opts.deadline });
  w.initialize({ exports: { memory } });
  const view = () => new DataView(memory.buffer);
  const fn = (name: string): Fn => w.wasiImport[name] as Fn;
  let top = 4096;
  /** Puts a string in memory; returns [ptr, len]. */
  const str = (s: string): [number, number] => {
    const b = new TextEncoder().encode(s);
    new Uint8Array(memory.buffer).set(b, top);
    const at = top;
    top += b.byteLength + 8;
    return [at, b.byteLength];
  };
  return { w, memory, view, fn, str, scratch };
}

const OUT = 1024; // scratch area for results

test('sock_*: BADF for a closed fd, NOTSOCK for an open one, never a trap', () => {
  const { fn } = setup();
  assert.equal(fn('sock_accept')(99, 0, OUT), W.ERRNO_BADF);
  assert.equal(fn('sock_accept')(3, 0, OUT), W.ERRNO_NOTSOCK);
  assert.equal(fn('sock_recv')(99, OUT, 1, 0, OUT, OUT + 4), W.ERRNO_BADF);
  assert.equal(fn('sock_recv')(0, OUT, 1, 0, OUT, OUT + 4), W.ERRNO_NOTSOCK);
  assert.equal(fn('sock_send')(1, OUT, 1, 0, OUT), W.ERRNO_NOTSOCK);
  assert.equal(fn('sock_send')(42, OUT, 1, 0, OUT), W.ERRNO_BADF);
  assert.equal(fn('sock_shutdown')(2, 1), W.ERRNO_NOTSOCK);
  assert.equal(fn('sock_shutdown')(7, 1), W.ERRNO_BADF);
});

test('args_sizes_get counts UTF-8 bytes (the shim counts UTF-16 units)', () => {
  const args = ['é', '日本', '😀'];
  const ours = setup({ args });
  assert.equal(ours.fn('args_sizes_get')(OUT, OUT + 4), 0);
  assert.equal(ours.view().getUint32(OUT, true), 4);
  const bytes = ['agent', ...args].reduce((n, a) => n + new TextEncoder().encode(a).byteLength + 1, 0);
  assert.equal(ours.view().getUint32(OUT + 4, true), bytes);
  const memory = new WebAssembly.Memory({ initial: 1 });
  const shim = new WASI(['agent', ...args], [], [], { debug: false });
  shim.initialize({ exports: { memory } });
  (shim.wasiImport.args_sizes_get as Fn)(OUT, OUT + 4);
  assert.ok(new DataView(memory.buffer).getUint32(OUT + 4, true) < bytes, 'the shim undercounts');
});

test('clock_time_get / clock_res_get: INVAL for clocks we do not have', () => {
  const { fn, view } = setup();
  assert.equal(fn('clock_time_get')(W.CLOCKID_PROCESS_CPUTIME_ID, 1n, OUT), W.ERRNO_INVAL);
  assert.equal(fn('clock_res_get')(W.CLOCKID_THREAD_CPUTIME_ID, OUT), W.ERRNO_INVAL);
  assert.equal(fn('clock_time_get')(W.CLOCKID_REALTIME, 1n, OUT), 0);
  const rt = view().getBigUint64(OUT, true);
  assert.ok(Math.abs(Number(rt / 1_000_000n) - Date.now()) < 1000);
});

/** Writes a clock subscription at `ptr` (48 bytes). */
function clockSub(view: DataView, ptr: number, userdata: bigint, clock: number, timeoutNs: bigint, abstime: boolean): void {
  for (let i = 0; i < 48; i++) view.setUint8(ptr + i, 0);
  view.setBigUint64(ptr, userdata, true);
  view.setUint8(ptr + 8, W.EVENTTYPE_CLOCK);
  view.setUint32(ptr + 16, clock, true);
  view.setBigUint64(ptr + 24, timeoutNs, true);
  view.setUint16(ptr + 40, abstime ? 1 : 0, true);
}

function fdSub(view: DataView, ptr: number, userdata: bigint, type: number, fd: number): void {
  for (let i = 0; i < 48; i++) view.setUint8(ptr + i, 0);
  view.setBigUint64(ptr, userdata, true);
  view.setUint8(ptr + 8, type);
  view.setUint32(ptr + 16, fd, true);
}

const IN = 8192;
const EVENTS = 16384;
const NEVENTS = 20000;

test('poll_oneoff: the earliest of two clocks fires, and its event is laid out as the spec says', () => {
  const { fn, view } = setup();
  clockSub(view(), IN, 0x1111n, W.CLOCKID_MONOTONIC, 400_000_000n, false);
  clockSub(view(), IN + 48, 0x2222n, W.CLOCKID_MONOTONIC, 20_000_000n, false);
  new Uint8Array(view().buffer).fill(0xee, EVENTS, EVENTS + 64);
  const t0 = performance.now();
  assert.equal(fn('poll_oneoff')(IN, EVENTS, 2, NEVENTS), 0);
  const took = performance.now() - t0;
  assert.ok(took >= 19 && took < 300, `took ${took} ms`);
  const v = view();
  assert.equal(v.getUint32(NEVENTS, true), 1);
  assert.equal(v.getBigUint64(EVENTS, true), 0x2222n); // userdata @0
  assert.equal(v.getUint16(EVENTS + 8, true), 0); // error @8
  assert.equal(v.getUint8(EVENTS + 10), W.EVENTTYPE_CLOCK); // type @10
  assert.equal(v.getBigUint64(EVENTS + 16, true), 0n); // fd_readwrite.nbytes @16
  assert.equal(v.getUint16(EVENTS + 24, true), 0); // fd_readwrite.flags @24
  assert.equal(v.getUint8(EVENTS + 32), 0xee, 'nothing written past one event');
});

test('poll_oneoff: the abstime flag is read at offset 40 (the shim reads 36)', () => {
  const { fn, view } = setup();
  const now = BigInt(Math.round(performance.now() * 1e6));
  clockSub(view(), IN, 1n, W.CLOCKID_MONOTONIC, now + 30_000_000n, true);
  view().setUint16(IN + 36, 0, true);
  const t0 = performance.now();
  assert.equal(fn('poll_oneoff')(IN, EVENTS, 1, NEVENTS), 0);
  const took = performance.now() - t0;
  assert.ok(took >= 25 && took < 300, `an absolute time 30 ms ahead took ${took} ms`);
});

test('poll_oneoff: fd readiness comes back at once beside a long clock; bad fds are BADF events', () => {
  const { fn, view } = setup({ stdin: 'hello' });
  clockSub(view(), IN, 1n, W.CLOCKID_MONOTONIC, 60_000_000_000n, false);
  fdSub(view(), IN + 48, 2n, W.EVENTTYPE_FD_READ, 0);
  fdSub(view(), IN + 96, 3n, W.EVENTTYPE_FD_WRITE, 1);
  fdSub(view(), IN + 144, 4n, W.EVENTTYPE_FD_READ, 77);
  const t0 = performance.now();
  assert.equal(fn('poll_oneoff')(IN, EVENTS, 4, NEVENTS), 0);
  assert.ok(performance.now() - t0 < 1000);
  const v = view();
  assert.equal(v.getUint32(NEVENTS, true), 3);
  const ev = (k: number) => ({
    userdata: v.getBigUint64(EVENTS + k * 32, true), error: v.getUint16(EVENTS + k * 32 + 8, true),
    type: v.getUint8(EVENTS + k * 32 + 10), nbytes: v.getBigUint64(EVENTS + k * 32 + 16, true),
  });
  assert.deepEqual(ev(0), { userdata: 2n, error: 0, type: W.EVENTTYPE_FD_READ, nbytes: 5n });
  assert.deepEqual(ev(1), { userdata: 3n, error: 0, type: W.EVENTTYPE_FD_WRITE, nbytes: 0n });
  assert.deepEqual(ev(2), { userdata: 4n, error: W.ERRNO_BADF, type: W.EVENTTYPE_FD_READ, nbytes: 0n });
});

test('poll_oneoff: no subscriptions or an unknown type is INVAL; a sleep past the deadline ends the run', () => {
  const { fn, view } = setup();
  assert.equal(fn('poll_oneoff')(IN, EVENTS, 0, NEVENTS), W.ERRNO_INVAL);
  fdSub(view(), IN, 1n, 9, 0);
  assert.equal(fn('poll_oneoff')(IN, EVENTS, 1, NEVENTS), W.ERRNO_INVAL);
  const late = setup({ deadline: performance.timeOrigin + performance.now() + 50 });
  clockSub(late.view(), IN, 1n, W.CLOCKID_MONOTONIC, 10_000_000_000n, false);
  const t0 = performance.now();
  assert.throws(() => late.fn('poll_oneoff')(IN, EVENTS, 1, NEVENTS), (e: unknown) => e instanceof AppError && e.code === 'AGENT_TIMEOUT');
  const took = performance.now() - t0;
  assert.ok(took >= 40 && took < 1000, `took ${took} ms`);
});

/** Opens `path` in the preopen (fd 3) with the given flags; returns [errno, fd]. */
function open(s: ReturnType<typeof setup>, path: string, oflags = 0, base = BigInt(W.RIGHTS_FD_READ | W.RIGHTS_FD_WRITE), fdflags = 0, lookup = 1): [number, number] {
  const [p, n] = s.str(path);
  const e = s.fn('path_open')(3, lookup, p, n, oflags, base, 0n, fdflags, OUT);
  return [e, s.view().getUint32(OUT, true)];
}

function write(s: ReturnType<typeof setup>, fd: number, text: string): number {
  const [p, n] = s.str(text);
  s.view().setUint32(OUT + 16, p, true);
  s.view().setUint32(OUT + 20, n, true);
  return s.fn('fd_write')(fd, OUT + 16, 1, OUT + 24);
}

test('fd_write honours append from path_open and from fd_fdstat_set_flags', () => {
  const s = setup({ files: { 'log.txt': 'abc' } });
  const [e, fd] = open(s, 'log.txt', 0, BigInt(W.RIGHTS_FD_WRITE | W.RIGHTS_FD_SEEK), W.FDFLAGS_APPEND);
  assert.equal(e, 0);
  assert.equal(s.fn('fd_seek')(fd, 0n, W.WHENCE_SET, OUT + 32), 0);
  assert.equal(write(s, fd, 'de'), 0);
  const file = s.scratch.dir.contents.get('log.txt') as File;
  assert.equal(new TextDecoder().decode(file.data), 'abcde');
  const [, fd2] = open(s, 'log.txt', 0, BigInt(W.RIGHTS_FD_WRITE | W.RIGHTS_FD_FDSTAT_SET_FLAGS));
  assert.equal(s.fn('fd_fdstat_set_flags')(fd2, W.FDFLAGS_APPEND), 0);
  assert.equal(write(s, fd2, 'f'), 0);
  assert.equal(new TextDecoder().decode(file.data), 'abcdef');
  assert.equal(s.fn('fd_fdstat_set_flags')(fd2, 1 << 5), W.ERRNO_INVAL);
});

test('fd_fdstat_get: filetype, flags and rights at offsets 0, 2, 8, 16', () => {
  const s = setup({ files: { 'f.txt': 'x' } });
  const v = s.view;
  assert.equal(s.fn('fd_fdstat_get')(3, OUT), 0);
  assert.equal(v().getUint8(OUT), W.FILETYPE_DIRECTORY);
  const dirBase = v().getBigUint64(OUT + 8, true);
  const dirInh = v().getBigUint64(OUT + 16, true);
  assert.ok((dirBase & BigInt(W.RIGHTS_PATH_OPEN)) !== 0n && (dirBase & BigInt(W.RIGHTS_FD_READ)) === 0n);
  assert.ok((dirInh & BigInt(W.RIGHTS_FD_READ | W.RIGHTS_FD_WRITE)) === BigInt(W.RIGHTS_FD_READ | W.RIGHTS_FD_WRITE));
  const [, fd] = open(s, 'f.txt', 0, BigInt(W.RIGHTS_FD_READ | W.RIGHTS_FD_SEEK), W.FDFLAGS_APPEND);
  assert.equal(s.fn('fd_fdstat_get')(fd, OUT), 0);
  assert.equal(v().getUint8(OUT), W.FILETYPE_REGULAR_FILE);
  assert.equal(v().getUint16(OUT + 2, true), W.FDFLAGS_APPEND);
  assert.equal(v().getBigUint64(OUT + 8, true), BigInt(W.RIGHTS_FD_READ | W.RIGHTS_FD_SEEK));
  assert.equal(write(s, fd, 'no'), W.ERRNO_BADF, 'opened without fd_write');
  assert.equal(s.fn('fd_fdstat_get')(0, OUT), 0);
  const stdin = v().getBigUint64(OUT + 8, true);
  assert.ok((stdin & BigInt(W.RIGHTS_FD_READ)) !== 0n && (stdin & BigInt(W.RIGHTS_FD_WRITE)) === 0n, 'stdin is read-only');
  assert.equal(s.fn('fd_fdstat_set_rights')(fd, BigInt(W.RIGHTS_FD_READ | W.RIGHTS_FD_WRITE), 0n), W.ERRNO_NOTCAPABLE);
});

test('fd_filestat_get: times at 40/48/56 (the shim writes 38/46/52), kept on create and write, set with validated fst_flags', () => {
  const s = setup();
  const before = BigInt(Date.now() - 5) * 1_000_000n;
  const [e, fd] = open(s, 'new.txt', W.OFLAGS_CREAT, BigInt(W.RIGHTS_FD_READ | W.RIGHTS_FD_WRITE | W.RIGHTS_FD_FILESTAT_GET | W.RIGHTS_FD_FILESTAT_SET_TIMES));
  assert.equal(e, 0);
  assert.equal(write(s, fd, 'hello'), 0);
  const v = s.view;
  assert.equal(s.fn('fd_filestat_get')(fd, OUT), 0);
  assert.equal(v().getUint8(OUT + 16), W.FILETYPE_REGULAR_FILE);
  assert.equal(v().getBigUint64(OUT + 24, true), 1n); // nlink
  assert.equal(v().getBigUint64(OUT + 32, true), 5n); // size
  for (const off of [40, 48, 56]) assert.ok(v().getBigUint64(OUT + off, true) >= before, `time at ${off}`);
  assert.equal(s.fn('fd_filestat_set_times')(fd, 111n, 222n, W.FSTFLAGS_ATIM | W.FSTFLAGS_MTIM), 0);
  s.fn('fd_filestat_get')(fd, OUT);
  assert.equal(v().getBigUint64(OUT + 40, true), 111n);
  assert.equal(v().getBigUint64(OUT + 48, true), 222n);
  assert.equal(v().getBigUint64(OUT + 32, true), 5n);
  assert.equal(s.fn('fd_filestat_set_times')(fd, 0n, 0n, W.FSTFLAGS_ATIM | W.FSTFLAGS_ATIM_NOW), W.ERRNO_INVAL);
  assert.equal(s.fn('fd_filestat_set_times')(fd, 0n, 0n, W.FSTFLAGS_MTIM | W.FSTFLAGS_MTIM_NOW), W.ERRNO_INVAL);
  const [p, n] = s.str('new.txt');
  assert.equal(s.fn('path_filestat_set_times')(3, 0, p, n, 0n, 0n, W.FSTFLAGS_ATIM | W.FSTFLAGS_ATIM_NOW), W.ERRNO_INVAL);
  assert.equal(s.fn('path_filestat_set_times')(3, 0, p, n, 0n, 333n, W.FSTFLAGS_MTIM), 0);
  assert.equal(s.fn('path_filestat_get')(3, 0, p, n, OUT), 0);
  assert.equal(v().getBigUint64(OUT + 48, true), 333n);
});

test('path_symlink, path_readlink and resolution through links, with LOOP past the bound', () => {
  const s = setup({ files: { 'a.txt': 'hi' } });
  const [t, tn] = s.str('a.txt');
  const [l, ln] = s.str('ln');
  assert.equal(s.fn('path_symlink')(t, tn, 3, l, ln), 0);
  assert.ok(s.scratch.dir.contents.get('ln') instanceof Symlink);
  assert.equal(s.fn('path_readlink')(3, l, ln, OUT, 64, OUT + 100), 0);
  assert.equal(s.view().getUint32(OUT + 100, true), 5);
  assert.equal(new TextDecoder().decode(new Uint8Array(s.memory.buffer, OUT, 5)), 'a.txt');
  assert.equal(open(s, 'ln', 0, BigInt(W.RIGHTS_FD_READ), 0, 1)[0], 0, 'followed');
  assert.equal(open(s, 'ln', 0, BigInt(W.RIGHTS_FD_READ), 0, 0)[0], W.ERRNO_LOOP, 'not followed');
  const [self, sn] = s.str('self');
  assert.equal(s.fn('path_symlink')(self, sn, 3, self, sn), 0);
  assert.equal(open(s, 'self', 0, BigInt(W.RIGHTS_FD_READ))[0], W.ERRNO_LOOP);
  assert.equal(s.fn('path_filestat_get')(3, 0, l, ln, OUT), 0);
  assert.equal(s.view().getUint8(OUT + 16), W.FILETYPE_SYMBOLIC_LINK);
});

test('path_link onto an existing path is EXIST; path_rename with a trailing slash: a directory moves, a file is NOTDIR', () => {
  const s = setup({ files: { 'a.txt': 'x', 'b.txt': 'y' } });
  const [a, an] = s.str('a.txt');
  const [b, bn] = s.str('b.txt');
  assert.equal(s.fn('path_link')(3, 0, a, an, 3, b, bn), W.ERRNO_EXIST);
  assert.equal(new TextDecoder().decode((s.scratch.dir.contents.get('b.txt') as File).data), 'y', 'the target is untouched');
  const [d, dn] = s.str('d');
  assert.equal(s.fn('path_create_directory')(3, d, dn), 0);
  const [ds, dsn] = s.str('d/');
  const [es, esn] = s.str('e/');
  assert.equal(s.fn('path_rename')(3, ds, dsn, 3, es, esn), 0);
  assert.ok(s.scratch.dir.contents.has('e') && !s.scratch.dir.contents.has('d'));
  const [as, asn] = s.str('a.txt/');
  assert.equal(s.fn('path_rename')(3, as, asn, 3, b, bn), W.ERRNO_NOTDIR);
});

test('path_open validates oflags, fdflags and lookupflags', () => {
  const s = setup({ files: { 'a.txt': 'x' } });
  assert.equal(open(s, 'a.txt', 1 << 4)[0], W.ERRNO_INVAL);
  assert.equal(open(s, 'a.txt', 0, 0n, 1 << 5)[0], W.ERRNO_INVAL);
  assert.equal(open(s, 'a.txt', 0, 0n, 0, 2)[0], W.ERRNO_INVAL);
  assert.equal(open(s, 'x', W.OFLAGS_DIRECTORY | W.OFLAGS_CREAT)[0], W.ERRNO_INVAL);
  assert.equal(open(s, 'a.txt', W.OFLAGS_CREAT | W.OFLAGS_EXCL)[0], W.ERRNO_EXIST);
  assert.equal(open(s, 'a.txt', W.OFLAGS_DIRECTORY)[0], W.ERRNO_NOTDIR);
});

const R_ALL = 0x1fffffff & ~W.RIGHTS_SOCK_SHUTDOWN;

/** A new fd on `path` (a directory with `dir`) holding every right it can but `drop`; its number. */
function narrowed(s: ReturnType<typeof setup>, path: string, drop: number, dir = false): number {
  const [e, fd] = open(s, path, dir ? W.OFLAGS_DIRECTORY : 0, BigInt(dir ? R_ALL & ~W.RIGHTS_FD_WRITE : R_ALL));
  assert.equal(e, 0, `open ${path}`);
  assert.equal(s.fn('fd_fdstat_get')(fd, OUT + 200), 0);
  const base = s.view().getBigUint64(OUT + 208, true);
  const inheriting = s.view().getBigUint64(OUT + 216, true);
  assert.ok((base & BigInt(drop)) !== 0n, `the fd holds the right ${drop} before it is dropped`);
  assert.equal(s.fn('fd_fdstat_set_rights')(fd, base & ~BigInt(drop), inheriting), 0);
  return fd;
}

test('rights: each fd_* function the spec ties to a right answers NOTCAPABLE without it, works with it', () => {
  const s = setup({ files: { 'f.txt': 'hello' } });
  s.view().setUint32(OUT + 300, OUT + 400, true); // one iovec of 2 bytes at OUT + 400, for pread and pwrite
  s.view().setUint32(OUT + 304, 2, true);
  const cases: [string, number, (fd: number) => number][] = [
    ['fd_seek', W.RIGHTS_FD_SEEK, (fd) => s.fn('fd_seek')(fd, 1n, W.WHENCE_SET, OUT)],
    ['fd_advise', W.RIGHTS_FD_ADVISE, (fd) => s.fn('fd_advise')(fd, 0n, 1n, W.ADVICE_NORMAL)],
    ['fd_allocate', W.RIGHTS_FD_ALLOCATE, (fd) => s.fn('fd_allocate')(fd, 0n, 8n)],
    ['fd_datasync', W.RIGHTS_FD_DATASYNC, (fd) => s.fn('fd_datasync')(fd)],
    ['fd_sync', W.RIGHTS_FD_SYNC, (fd) => s.fn('fd_sync')(fd)],
    ['fd_fdstat_set_flags', W.RIGHTS_FD_FDSTAT_SET_FLAGS, (fd) => s.fn('fd_fdstat_set_flags')(fd, 0)],
    ['fd_filestat_get', W.RIGHTS_FD_FILESTAT_GET, (fd) => s.fn('fd_filestat_get')(fd, OUT)],
    ['fd_filestat_set_size', W.RIGHTS_FD_FILESTAT_SET_SIZE, (fd) => s.fn('fd_filestat_set_size')(fd, 5n)],
    ['fd_filestat_set_times', W.RIGHTS_FD_FILESTAT_SET_TIMES, (fd) => s.fn('fd_filestat_set_times')(fd, 0n, 0n, W.FSTFLAGS_MTIM_NOW)],
    ['fd_pread', W.RIGHTS_FD_SEEK, (fd) => s.fn('fd_pread')(fd, OUT + 300, 1, 0n, OUT)],
    ['fd_pwrite', W.RIGHTS_FD_SEEK, (fd) => s.fn('fd_pwrite')(fd, OUT + 300, 1, 0n, OUT)],
  ];
  for (const [name, right, run] of cases) {
    assert.equal(run(narrowed(s, 'f.txt', right)), W.ERRNO_NOTCAPABLE, `${name} without its right`);
    assert.equal(run(narrowed(s, 'f.txt', right === W.RIGHTS_FD_SEEK ? W.RIGHTS_FD_TELL : W.RIGHTS_FD_SEEK)), 0, `${name} with its right`);
  }
  // A seek of 0 from the current offset tells: fd_tell does for it, and fd_seek implies fd_tell.
  const noSeek = narrowed(s, 'f.txt', W.RIGHTS_FD_SEEK);
  assert.equal(s.fn('fd_seek')(noSeek, 0n, W.WHENCE_CUR, OUT), 0);
  assert.equal(s.fn('fd_tell')(noSeek, OUT), 0);
  const noTell = narrowed(s, 'f.txt', W.RIGHTS_FD_TELL);
  assert.equal(s.fn('fd_tell')(noTell, OUT), 0);
  assert.equal(s.fn('fd_seek')(noTell, 0n, W.WHENCE_CUR, OUT), 0);
  assert.equal(s.fn('fd_fdstat_set_rights')(noTell, BigInt(W.RIGHTS_FD_READ), 0n), 0);
  assert.equal(s.fn('fd_tell')(noTell, OUT), W.ERRNO_NOTCAPABLE);
  assert.equal(s.fn('fd_seek')(noTell, 0n, W.WHENCE_CUR, OUT), W.ERRNO_NOTCAPABLE);
  // Without fd_write, set_size and allocate stay BADF (as ftruncate on an fd not open for writing).
  const readOnly = narrowed(s, 'f.txt', W.RIGHTS_FD_WRITE);
  assert.equal(s.fn('fd_filestat_set_size')(readOnly, 0n), W.ERRNO_BADF);
  assert.equal(s.fn('fd_allocate')(readOnly, 0n, 1n), W.ERRNO_BADF);
  assert.equal(s.fn('fd_filestat_set_size')(99, 0n), W.ERRNO_BADF, 'an fd not open is BADF before any right');
  // stdout has no fd_seek (the rights it reports): seeks and pwrite are NOTCAPABLE.
  assert.equal(s.fn('fd_seek')(1, 0n, W.WHENCE_SET, OUT), W.ERRNO_NOTCAPABLE);
  assert.equal(s.fn('fd_pwrite')(1, OUT + 300, 1, 0n, OUT), W.ERRNO_NOTCAPABLE);
});

test('rights: each path_* function and fd_readdir needs its right on the directory fd, and changes nothing without it', () => {
  const s = setup({ files: { 'a.txt': 'hello', 'old.txt': 'o', 'gone.txt': 'g' } });
  const tree = s.scratch.dir.contents;
  const p = (path: string) => s.str(path);
  const [a, an] = p('a.txt');
  const cases: [string, number, (fd: number) => number, () => void][] = [
    ['path_create_directory', W.RIGHTS_PATH_CREATE_DIRECTORY, (fd) => s.fn('path_create_directory')(fd, ...p('d')), () => assert.ok(!tree.has('d'))],
    ['path_open', W.RIGHTS_PATH_OPEN, (fd) => s.fn('path_open')(fd, 0, a, an, 0, BigInt(W.RIGHTS_FD_READ), 0n, 0, OUT), () => undefined],
    ['path_open creat', W.RIGHTS_PATH_CREATE_FILE, (fd) => s.fn('path_open')(fd, 0, ...p('new.txt'), W.OFLAGS_CREAT, 0n, 0n, 0, OUT), () => assert.ok(!tree.has('new.txt'))],
    ['path_open trunc', W.RIGHTS_PATH_FILESTAT_SET_SIZE, (fd) => s.fn('path_open')(fd, 0, a, an, W.OFLAGS_TRUNC, 0n, 0n, 0, OUT),
      () => assert.equal((tree.get('a.txt') as File).data.byteLength, 5)],
    ['path_filestat_get', W.RIGHTS_PATH_FILESTAT_GET, (fd) => s.fn('path_filestat_get')(fd, 0, a, an, OUT), () => undefined],
    ['path_filestat_set_times', W.RIGHTS_PATH_FILESTAT_SET_TIMES, (fd) => s.fn('path_filestat_set_times')(fd, 0, a, an, 0n, 7n, W.FSTFLAGS_MTIM),
      () => assert.notEqual(s.w.metadata.times(tree.get('a.txt') as File).mtim, 7n)],
    ['path_symlink', W.RIGHTS_PATH_SYMLINK, (fd) => s.fn('path_symlink')(a, an, fd, ...p('ln')), () => assert.ok(!tree.has('ln'))],
    ['path_readlink', W.RIGHTS_PATH_READLINK, (fd) => s.fn('path_readlink')(fd, ...p('ln'), OUT, 64, OUT + 100), () => undefined],
    ['path_link source', W.RIGHTS_PATH_LINK_SOURCE, (fd) => s.fn('path_link')(fd, 0, a, an, 3, ...p('h1')), () => assert.ok(!tree.has('h1'))],
    ['path_link target', W.RIGHTS_PATH_LINK_TARGET, (fd) => s.fn('path_link')(3, 0, a, an, fd, ...p('h2')), () => assert.ok(!tree.has('h2'))],
    ['path_rename source', W.RIGHTS_PATH_RENAME_SOURCE, (fd) => s.fn('path_rename')(fd, ...p('old.txt'), 3, ...p('mid.txt')), () => assert.ok(tree.has('old.txt'))],
    ['path_rename target', W.RIGHTS_PATH_RENAME_TARGET, (fd) => s.fn('path_rename')(3, ...p('mid.txt'), fd, ...p('new2.txt')), () => assert.ok(tree.has('mid.txt'))],
    ['path_unlink_file', W.RIGHTS_PATH_UNLINK_FILE, (fd) => s.fn('path_unlink_file')(fd, ...p('gone.txt')), () => assert.ok(tree.has('gone.txt'))],
    ['path_remove_directory', W.RIGHTS_PATH_REMOVE_DIRECTORY, (fd) => s.fn('path_remove_directory')(fd, ...p('d')), () => assert.ok(tree.has('d'))],
    ['fd_readdir', W.RIGHTS_FD_READDIR, (fd) => s.fn('fd_readdir')(fd, OUT, 256, 0n, OUT + 300), () => undefined],
  ];
  for (const [name, right, run, unchanged] of cases) {
    assert.equal(run(narrowed(s, '.', right, true)), W.ERRNO_NOTCAPABLE, `${name} without its right`);
    unchanged();
    // Dropping a right no path function needs leaves the function working.
    assert.equal(run(narrowed(s, '.', W.RIGHTS_FD_FILESTAT_SET_TIMES, true)), 0, `${name} with its right`);
  }
  assert.ok(tree.has('d') === false && tree.get('ln') instanceof Symlink && tree.has('h1') && tree.has('h2') && tree.has('new2.txt') && !tree.has('gone.txt'));
  assert.equal((tree.get('a.txt') as File).data.byteLength, 0, 'truncated with the right');
  // A directory opened through one whose inheriting rights lack a right lacks it too.
  const DIR_ALL = BigInt(R_ALL & ~W.RIGHTS_FD_WRITE);
  const [dot, dn] = p('.');
  assert.equal(s.fn('path_open')(3, 0, dot, dn, W.OFLAGS_DIRECTORY, DIR_ALL, DIR_ALL & ~BigInt(W.RIGHTS_PATH_CREATE_DIRECTORY), 0, OUT), 0);
  const sub = s.view().getUint32(OUT, true);
  assert.equal(s.fn('path_open')(sub, 0, dot, dn, W.OFLAGS_DIRECTORY, DIR_ALL, DIR_ALL, 0, OUT), 0);
  const grandchild = s.view().getUint32(OUT, true);
  assert.equal(s.fn('path_create_directory')(grandchild, ...p('x')), W.ERRNO_NOTCAPABLE);
  assert.equal(s.fn('path_create_directory')(sub, ...p('x')), 0, 'the middle fd itself still holds the right');
});
