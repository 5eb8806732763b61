/**
 * WASI preview1 records written into guest memory at the offsets the spec lays out
 * (WebAssembly/WASI, legacy/preview1/docs.md, "filestat", "event", "subscription").
 *
 * Deviation from the shim: its `Filestat.write_bytes` writes atim/mtim/ctim at 38/46/52
 * (inside `size` and each other) instead of 40/48/56, and its `Subscription.read_bytes`
 * reads the clock flags at 36 instead of 40, so an absolute-time sleep is read as relative.
 */
import { wasi } from '@bjorn3/browser_wasi_shim';

export interface FileStat {
  ino: bigint;
  filetype: number;
  nlink: bigint;
  size: bigint;
  atim: bigint;
  mtim: bigint;
  ctim: bigint;
}

/** `filestat`: size 64, align 8. */
export function writeFilestat(view: DataView, ptr: number, s: FileStat): void {
  view.setBigUint64(ptr, 0n, true); // dev
  view.setBigUint64(ptr + 8, s.ino, true);
  view.setUint8(ptr + 16, s.filetype);
  for (let i = 17; i < 24; i++) view.setUint8(ptr + i, 0);
  view.setBigUint64(ptr + 24, s.nlink, true);
  view.setBigUint64(ptr + 32, s.size, true);
  view.setBigUint64(ptr + 40, s.atim, true);
  view.setBigUint64(ptr + 48, s.mtim, true);
  view.setBigUint64(ptr + 56, s.ctim, true);
}

/** `fdstat`: size 24, align 8: filetype u8 @0, flags u16 @2, rights_base u64 @8, rights_inheriting u64 @16. */
export function writeFdstat(view: DataView, ptr: number, filetype: number, flags: number, base: bigint, inheriting: bigint): void {
  for (let i = 0; i < 8; i++) view.setUint8(ptr + i, 0);
  view.setUint8(ptr, filetype);
  view.setUint16(ptr + 2, flags, true);
  view.setBigUint64(ptr + 8, base, true);
  view.setBigUint64(ptr + 16, inheriting, true);
}

export const SUBSCRIPTION_SIZE = 48;
export const EVENT_SIZE = 32;

export type Subscription =
  | { kind: 'clock'; userdata: bigint; tag: number; clock: number; timeout: bigint; precision: bigint; abstime: boolean }
  | { kind: 'fd'; userdata: bigint; tag: number; fd: number }
  | { kind: 'unknown'; userdata: bigint; tag: number };

/**
 * `subscription`: userdata u64 @0, u @8 (tag u8 @8, contents @16).
 * clock: id u32 @16, timeout u64 @24, precision u64 @32, flags u16 @40; fd_read/fd_write: fd u32 @16.
 */
export function readSubscription(view: DataView, ptr: number): Subscription {
  const userdata = view.getBigUint64(ptr, true);
  const tag = view.getUint8(ptr + 8);
  if (tag === wasi.EVENTTYPE_CLOCK) {
    return {
      kind: 'clock',
      userdata,
      tag,
      clock: view.getUint32(ptr + 16, true),
      timeout: view.getBigUint64(ptr + 24, true),
      precision: view.getBigUint64(ptr + 32, true),
      abstime: (view.getUint16(ptr + 40, true) & wasi.SUBCLOCKFLAGS_SUBSCRIPTION_CLOCK_ABSTIME) !== 0,
    };
  }
  if (tag === wasi.EVENTTYPE_FD_READ || tag === wasi.EVENTTYPE_FD_WRITE) return { kind: 'fd', userdata, tag, fd: view.getUint32(ptr + 16, true) };
  return { kind: 'unknown', userdata, tag };
}

/**
 * `event`: size 32: userdata u64 @0, error u16 @8, type u8 @10, fd_readwrite @16
 * (nbytes u64 @16, flags u16 @24); clock events carry zeros there.
 */
export function writeEvent(view: DataView, ptr: number, userdata: bigint, error: number, type: number, nbytes = 0n, flags = 0): void {
  for (let i = 0; i < EVENT_SIZE; i++) view.setUint8(ptr + i, 0);
  view.setBigUint64(ptr, userdata, true);
  view.setUint16(ptr + 8, error, true);
  view.setUint8(ptr + 10, type);
  view.setBigUint64(ptr + 16, nbytes, true);
  view.setUint16(ptr + 24, flags, true);
}
