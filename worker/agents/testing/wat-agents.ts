/**
 * Agents for tests, written in WAT and compiled with wabt: each one shows one
 * way a run can end. Shared by the runtime and pool tests.
 */
import wabtInit from 'wabt';

const PRELUDE = `
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 512) "data.json")
  (data (i32.const 528) "oops, exiting with 3\\n")
  (global $runs (mut i32) (i32.const 0))
  ;; write(fd, ptr, len): one iovec at 0, nwritten at 8
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
  ;; readall(fd, ptr, cap) -> bytes read: iovec at 16, nread at 24
  (func $readall (param $fd i32) (param $ptr i32) (param $cap i32) (result i32) (local $n i32) (local $total i32)
    (loop $more
      (i32.store (i32.const 16) (i32.add (local.get $ptr) (local.get $total)))
      (i32.store (i32.const 20) (i32.sub (local.get $cap) (local.get $total)))
      (if (call $fd_read (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 24)) (then (return (i32.const -1))))
      (local.set $n (i32.load (i32.const 24)))
      (local.set $total (i32.add (local.get $total) (local.get $n)))
      (br_if $more (local.get $n)))
    (local.get $total))`;

export const WAT_AGENTS = {
  /** stdin → stdout unchanged. */
  echo: `(call $write (i32.const 1) (i32.const 4096) (call $readall (i32.const 0) (i32.const 4096) (i32.const 60000)))`,
  /** argv and environ (NUL-separated) to stderr; /input/data.json to stdout. */
  argsenv: `
    (drop (call $args_sizes_get (i32.const 32) (i32.const 36)))
    (drop (call $args_get (i32.const 1024) (i32.const 8192)))
    (call $write (i32.const 2) (i32.const 8192) (i32.load (i32.const 36)))
    (drop (call $environ_sizes_get (i32.const 32) (i32.const 36)))
    (drop (call $environ_get (i32.const 1024) (i32.const 16384)))
    (call $write (i32.const 2) (i32.const 16384) (i32.load (i32.const 36)))
    (if (call $path_open (i32.const 3) (i32.const 0) (i32.const 512) (i32.const 9) (i32.const 0)
                         (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 40))
      (then (call $proc_exit (i32.const 9))))
    (call $write (i32.const 1) (i32.const 32768) (call $readall (i32.load (i32.const 40)) (i32.const 32768) (i32.const 30000)))`,
  /** Never ends. */
  spin: `(loop $l (br $l))`,
  /** Grows memory 16 pages at a time until refused, then traps. */
  bomb: `(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) (unreachable)`,
  /** Writes 1000 bytes to stdout forever. */
  flood: `(loop $l (call $write (i32.const 1) (i32.const 4096) (i32.const 1000)) (br $l))`,
  /** Divides by zero. */
  trap: `(drop (i32.div_s (i32.const 1) (i32.load (i32.const 60))))`,
  /** A line on stderr, then exit code 3. */
  exit3: `(call $write (i32.const 2) (i32.const 528) (i32.const 21)) (call $proc_exit (i32.const 3))`,
  /** Prints text that is not JSON. */
  notjson: `(call $write (i32.const 1) (i32.const 528) (i32.const 4))`,
  /** Counts its runs in a global and prints the count: 1 every time when instances are fresh. */
  counter: `
    (global.set $runs (i32.add (global.get $runs) (i32.const 1)))
    (i32.store8 (i32.const 600) (i32.add (i32.const 48) (global.get $runs)))
    (call $write (i32.const 1) (i32.const 600) (i32.const 1))`,
  /** Spins in a loop for about `N` iterations, N read from stdin as decimal digits (for timing tests). */
  busy: `(local $n i32) (local $i i32) (local $len i32)
    (local.set $len (call $readall (i32.const 0) (i32.const 4096) (i32.const 32)))
    (block $done (loop $digits
      (br_if $done (i32.ge_s (local.get $i) (local.get $len)))
      (local.set $n (i32.add (i32.mul (local.get $n) (i32.const 10)) (i32.sub (i32.load8_u (i32.add (i32.const 4096) (local.get $i))) (i32.const 48))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $digits)))
    (local.set $i (i32.const 0))
    (block $end (loop $l (br_if $end (i32.ge_u (local.get $i) (local.get $n))) (local.set $i (i32.add (local.get $i) (i32.const 1))) (br $l)))
    (call $write (i32.const 1) (i32.const 4096) (local.get $len))`,
} as const;

export type WatAgentName = keyof typeof WAT_AGENTS;

export function watAgentSource(name: WatAgentName): string {
  const body = WAT_AGENTS[name];
  return `(module ${PRELUDE} (func (export "_start") ${body}))`;
}

/** Compiles every test agent to bytes. */
export async function buildWatAgents(): Promise<Record<WatAgentName, Uint8Array>> {
  const wabt = await wabtInit();
  const out = {} as Record<WatAgentName, Uint8Array>;
  for (const name of Object.keys(WAT_AGENTS) as WatAgentName[]) {
    const mod = wabt.parseWat(`${name}.wat`, watAgentSource(name), { bulk_memory: true, multi_value: true });
    try {
      out[name] = mod.toBinary({}).buffer;
    } finally {
      mod.destroy();
    }
  }
  return out;
}

/** `bytes` plus a custom section carrying `n`: a module with its own hash that runs the same (for cache tests). */
export function versioned(bytes: Uint8Array, n: number): Uint8Array {
  const section = [0x00, 6, 1, 0x76 /* "v" */, n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
  const out = new Uint8Array(bytes.length + section.length);
  out.set(bytes);
  out.set(section, bytes.length);
  return out;
}
