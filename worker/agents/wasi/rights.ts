/**
 * Rights reported by fd_fdstat_get (WASI preview1 docs.md, "rights"). The shim reports 0
 * for files and directories (and only fd_write for its console); these are what each kind
 * of descriptor can actually do here. Narrowed by what path_open asked for and by
 * fd_fdstat_set_rights.
 */
import { wasi } from '@bjorn3/browser_wasi_shim';

const r = (...bits: number[]): bigint => bits.reduce((acc, b) => acc | BigInt(b), 0n);

/** What any open regular file allows. */
export const FILE_READ = r(
  wasi.RIGHTS_FD_DATASYNC, wasi.RIGHTS_FD_READ, wasi.RIGHTS_FD_SEEK, wasi.RIGHTS_FD_FDSTAT_SET_FLAGS, wasi.RIGHTS_FD_SYNC,
  wasi.RIGHTS_FD_TELL, wasi.RIGHTS_FD_ADVISE, wasi.RIGHTS_FD_FILESTAT_GET, wasi.RIGHTS_POLL_FD_READWRITE,
);
/** What a writable regular file adds. */
export const FILE_WRITE = r(wasi.RIGHTS_FD_WRITE, wasi.RIGHTS_FD_ALLOCATE, wasi.RIGHTS_FD_FILESTAT_SET_SIZE, wasi.RIGHTS_FD_FILESTAT_SET_TIMES);
/** The rights that need the fd open for reading / writing. */
export const READ_BITS = r(wasi.RIGHTS_FD_READ);
export const WRITE_BITS = FILE_WRITE;

export const DIRECTORY = r(
  wasi.RIGHTS_FD_DATASYNC, wasi.RIGHTS_FD_FDSTAT_SET_FLAGS, wasi.RIGHTS_FD_SYNC, wasi.RIGHTS_PATH_CREATE_DIRECTORY,
  wasi.RIGHTS_PATH_CREATE_FILE, wasi.RIGHTS_PATH_LINK_SOURCE, wasi.RIGHTS_PATH_LINK_TARGET, wasi.RIGHTS_PATH_OPEN,
  wasi.RIGHTS_FD_READDIR, wasi.RIGHTS_PATH_READLINK, wasi.RIGHTS_PATH_RENAME_SOURCE, wasi.RIGHTS_PATH_RENAME_TARGET,
  wasi.RIGHTS_PATH_FILESTAT_GET, wasi.RIGHTS_PATH_FILESTAT_SET_SIZE, wasi.RIGHTS_PATH_FILESTAT_SET_TIMES,
  wasi.RIGHTS_FD_FILESTAT_GET, wasi.RIGHTS_FD_FILESTAT_SET_TIMES, wasi.RIGHTS_PATH_SYMLINK,
  wasi.RIGHTS_PATH_REMOVE_DIRECTORY, wasi.RIGHTS_PATH_UNLINK_FILE,
);
/** What a directory passes on to what is opened through it: itself and files. */
export const DIRECTORY_INHERITING = DIRECTORY | FILE_READ | FILE_WRITE;

/** stdout / stderr: a character device that can be written, not sought. */
export const CONSOLE_OUT = r(wasi.RIGHTS_FD_WRITE, wasi.RIGHTS_FD_FDSTAT_SET_FLAGS, wasi.RIGHTS_FD_FILESTAT_GET, wasi.RIGHTS_POLL_FD_READWRITE);

export const ALL_FDFLAGS = wasi.FDFLAGS_APPEND | wasi.FDFLAGS_DSYNC | wasi.FDFLAGS_NONBLOCK | wasi.FDFLAGS_RSYNC | wasi.FDFLAGS_SYNC;
export const ALL_OFLAGS = wasi.OFLAGS_CREAT | wasi.OFLAGS_DIRECTORY | wasi.OFLAGS_EXCL | wasi.OFLAGS_TRUNC;
export const ALL_FSTFLAGS = wasi.FSTFLAGS_ATIM | wasi.FSTFLAGS_ATIM_NOW | wasi.FSTFLAGS_MTIM | wasi.FSTFLAGS_MTIM_NOW;
export const ALL_LOOKUPFLAGS = 1;
