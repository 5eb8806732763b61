/*
 * fd: rights (and what each fd_* function needs of them), append, flags, timestamps and sizes
 * on descriptors. Run with stdin "hello" and an empty writable directory preopened at /scratch.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <wasi/api.h>
#include "check.h"

#define R_READ __WASI_RIGHTS_FD_READ
#define R_WRITE __WASI_RIGHTS_FD_WRITE

static __wasi_fdstat_t fdstat(int fd) {
  __wasi_fdstat_t s;
  memset(&s, 0xff, sizeof s);
  if (__wasi_fd_fdstat_get((__wasi_fd_t)fd, &s) != 0) memset(&s, 0, sizeof s);
  return s;
}

static long long size_of(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 ? (long long)st.st_size : -1;
}

static unsigned long long ns(struct timespec t) { return (unsigned long long)t.tv_sec * 1000000000ull + (unsigned long long)t.tv_nsec; }

/* ---- rights: each fd_* function on a file needs the right the spec names (docs.md "rights") */

static __wasi_rights_t FILE_BASE;

/* /scratch/r.txt opened read-write, then narrowed to its rights less `drop`; -1 when that fails. */
static int file_without(__wasi_rights_t drop) {
  int fd = open("/scratch/r.txt", O_RDWR);
  if (fd < 0) return -1;
  if (__wasi_fd_fdstat_set_rights((__wasi_fd_t)fd, FILE_BASE & ~drop, 0) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

typedef __wasi_errno_t (*fd_op)(__wasi_fd_t);

/* `op` on r.txt without `right`: NOTCAPABLE; on r.txt without some other right (`other`): works. */
static void needs(const char *name, __wasi_rights_t right, __wasi_rights_t other, fd_op op) {
  char what[160];
  int fd = file_without(right);
  snprintf(what, sizeof what, "%s without its right is NOTCAPABLE", name);
  CHECK_EQ(what, __WASI_ERRNO_NOTCAPABLE, op((__wasi_fd_t)fd));
  close(fd);
  fd = file_without(other);
  snprintf(what, sizeof what, "%s with its right works", name);
  CHECK_EQ(what, 0, op((__wasi_fd_t)fd));
  close(fd);
}

static uint8_t two[2];
static __wasi_errno_t op_seek(__wasi_fd_t fd) {
  __wasi_filesize_t at;
  return __wasi_fd_seek(fd, 1, __WASI_WHENCE_SET, &at);
}
static __wasi_errno_t op_tell(__wasi_fd_t fd) {
  __wasi_filesize_t at;
  return __wasi_fd_tell(fd, &at);
}
static __wasi_errno_t op_pread(__wasi_fd_t fd) {
  __wasi_iovec_t iov = {two, 2};
  __wasi_size_t n;
  return __wasi_fd_pread(fd, &iov, 1, 0, &n);
}
static __wasi_errno_t op_pwrite(__wasi_fd_t fd) {
  __wasi_ciovec_t iov = {(const uint8_t *)"rr", 2};
  __wasi_size_t n;
  return __wasi_fd_pwrite(fd, &iov, 1, 0, &n);
}
static __wasi_errno_t op_fstat(__wasi_fd_t fd) {
  __wasi_filestat_t st;
  return __wasi_fd_filestat_get(fd, &st);
}
static __wasi_errno_t op_truncate(__wasi_fd_t fd) { return __wasi_fd_filestat_set_size(fd, 4); }
static __wasi_errno_t op_times(__wasi_fd_t fd) { return __wasi_fd_filestat_set_times(fd, 0, 0, __WASI_FSTFLAGS_MTIM_NOW); }
static __wasi_errno_t op_advise(__wasi_fd_t fd) { return __wasi_fd_advise(fd, 0, 1, __WASI_ADVICE_NORMAL); }
static __wasi_errno_t op_allocate(__wasi_fd_t fd) { return __wasi_fd_allocate(fd, 0, 4); }
static __wasi_errno_t op_datasync(__wasi_fd_t fd) { return __wasi_fd_datasync(fd); }
static __wasi_errno_t op_sync(__wasi_fd_t fd) { return __wasi_fd_sync(fd); }
static __wasi_errno_t op_setflags(__wasi_fd_t fd) { return __wasi_fd_fdstat_set_flags(fd, 0); }

static void fd_rights(void) {
  int w = open("/scratch/r.txt", O_CREAT | O_RDWR | O_TRUNC, 0644);
  CHECK_EQ("write r.txt", 4, write(w, "rrrr", 4));
  FILE_BASE = fdstat(w).fs_rights_base;
  close(w);
  const __wasi_rights_t SEEK = __WASI_RIGHTS_FD_SEEK, TELL = __WASI_RIGHTS_FD_TELL;
  needs("fd_seek", SEEK, TELL, op_seek);
  needs("fd_tell", TELL | SEEK, __WASI_RIGHTS_FD_ADVISE, op_tell);
  needs("fd_pread (fd_read + fd_seek)", SEEK, TELL, op_pread);
  needs("fd_pwrite (fd_write + fd_seek)", SEEK, TELL, op_pwrite);
  needs("fd_filestat_get", __WASI_RIGHTS_FD_FILESTAT_GET, SEEK, op_fstat);
  needs("fd_filestat_set_size", __WASI_RIGHTS_FD_FILESTAT_SET_SIZE, SEEK, op_truncate);
  needs("fd_filestat_set_times", __WASI_RIGHTS_FD_FILESTAT_SET_TIMES, SEEK, op_times);
  needs("fd_advise", __WASI_RIGHTS_FD_ADVISE, SEEK, op_advise);
  needs("fd_allocate", __WASI_RIGHTS_FD_ALLOCATE, SEEK, op_allocate);
  needs("fd_datasync", __WASI_RIGHTS_FD_DATASYNC, SEEK, op_datasync);
  needs("fd_sync", __WASI_RIGHTS_FD_SYNC, SEEK, op_sync);
  needs("fd_fdstat_set_flags", __WASI_RIGHTS_FD_FDSTAT_SET_FLAGS, SEEK, op_setflags);

  /* fd_seek implies fd_tell; a seek of 0 from the current offset only tells */
  int f = file_without(TELL);
  __wasi_filesize_t at = 99;
  CHECK_EQ("fd_tell with fd_seek but not fd_tell works", 0, __wasi_fd_tell((__wasi_fd_t)f, &at));
  close(f);
  f = file_without(SEEK);
  CHECK_EQ("a seek of 0 from the current offset needs only fd_tell", 0, __wasi_fd_seek((__wasi_fd_t)f, 0, __WASI_WHENCE_CUR, &at));
  errno = 0;
  /* wasi-libc's lseek turns NOTCAPABLE into ESPIPE, as for a pipe */
  check("lseek(SEEK_SET) without fd_seek fails with ESPIPE", lseek(f, 0, SEEK_SET) == -1 && errno == ESPIPE, "errno %d", errno);
  close(f);
  f = file_without(__WASI_RIGHTS_FD_FILESTAT_GET);
  struct stat st;
  errno = 0;
  check("fstat without fd_filestat_get fails with ENOTCAPABLE", fstat(f, &st) == -1 && errno == ENOTCAPABLE, "errno %d", errno);
  close(f);

  /* without fd_write, ftruncate and fd_allocate stay EBADF (the fd is not open for writing) */
  f = file_without(R_WRITE);
  CHECK_EQ("fd_filestat_set_size without fd_write is BADF", __WASI_ERRNO_BADF, op_truncate((__wasi_fd_t)f));
  CHECK_EQ("fd_allocate without fd_write is BADF", __WASI_ERRNO_BADF, op_allocate((__wasi_fd_t)f));
  close(f);

  /* stdout cannot seek (its rights say so) */
  CHECK_EQ("fd_seek on stdout is NOTCAPABLE", __WASI_ERRNO_NOTCAPABLE, op_seek(1));
  CHECK_EQ("fd_pwrite on stdout is NOTCAPABLE", __WASI_ERRNO_NOTCAPABLE, op_pwrite(1));
}

int main(void) {
  __wasi_fdstat_t s = fdstat(0);
  check("stdin can be read, not written", (s.fs_rights_base & R_READ) && !(s.fs_rights_base & R_WRITE), "rights %llx", (unsigned long long)s.fs_rights_base);
  s = fdstat(1);
  CHECK_EQ("stdout is a character device", __WASI_FILETYPE_CHARACTER_DEVICE, s.fs_filetype);
  check("stdout can be written, not read or sought", (s.fs_rights_base & R_WRITE) && !(s.fs_rights_base & (R_READ | __WASI_RIGHTS_FD_SEEK)),
        "rights %llx", (unsigned long long)s.fs_rights_base);
  int dir = open("/scratch", O_RDONLY | O_DIRECTORY);
  check("open the preopen", dir >= 0, "errno %d", errno);
  s = fdstat(dir);
  CHECK_EQ("the preopen is a directory", __WASI_FILETYPE_DIRECTORY, s.fs_filetype);
  check("the directory can open, create and read entries", (s.fs_rights_base & (__WASI_RIGHTS_PATH_OPEN | __WASI_RIGHTS_PATH_CREATE_FILE | __WASI_RIGHTS_FD_READDIR)) ==
        (__WASI_RIGHTS_PATH_OPEN | __WASI_RIGHTS_PATH_CREATE_FILE | __WASI_RIGHTS_FD_READDIR), "rights %llx", (unsigned long long)s.fs_rights_base);
  check("the directory passes on read and write", (s.fs_rights_inheriting & (R_READ | R_WRITE)) == (R_READ | R_WRITE), "inheriting %llx",
        (unsigned long long)s.fs_rights_inheriting);
  check("the directory itself cannot be read or written", !(s.fs_rights_base & (R_READ | R_WRITE)), "rights %llx", (unsigned long long)s.fs_rights_base);

  struct timespec before;
  clock_gettime(CLOCK_REALTIME, &before);
  int w = open("/scratch/a.txt", O_CREAT | O_WRONLY | O_TRUNC, 0644);
  check("create a.txt", w >= 0, "errno %d", errno);
  CHECK_EQ("write abc", 3, write(w, "abc", 3));
  s = fdstat(w);
  check("a file opened write-only can write, not read", (s.fs_rights_base & R_WRITE) && !(s.fs_rights_base & R_READ), "rights %llx",
        (unsigned long long)s.fs_rights_base);
  CHECK_EQ("a regular file", __WASI_FILETYPE_REGULAR_FILE, s.fs_filetype);
  struct stat st;
  CHECK_EQ("fstat succeeds", 0, fstat(w, &st));
  unsigned long long t0 = ns(before);
  check("mtime is set at create", ns(st.st_mtim) >= t0 - 1000000ull && ns(st.st_mtim) < t0 + 60000000000ull, "mtime %llu, before %llu", ns(st.st_mtim), t0);
  check("atime and ctime are set at create", ns(st.st_atim) > 0 && ns(st.st_ctim) > 0, "atime %llu ctime %llu", ns(st.st_atim), ns(st.st_ctim));
  CHECK_EQ("the size beside the times is right", 3, st.st_size);
  CHECK_EQ("nlink is 1", 1, st.st_nlink);
  unsigned long long m1 = ns(st.st_mtim);
  struct timespec pause = {0, 5 * 1000 * 1000};
  nanosleep(&pause, NULL);
  CHECK_EQ("write more", 2, write(w, "de", 2));
  fstat(w, &st);
  check("a write moves mtime on", ns(st.st_mtim) > m1, "%llu then %llu", m1, ns(st.st_mtim));
  close(w);

  int r = open("/scratch/a.txt", O_RDONLY);
  s = fdstat(r);
  check("a file opened read-only can read, not write", (s.fs_rights_base & R_READ) && !(s.fs_rights_base & R_WRITE), "rights %llx",
        (unsigned long long)s.fs_rights_base);
  errno = 0;
  check("write on a read-only fd fails with EBADF", write(r, "x", 1) == -1 && errno == EBADF, "errno %d", errno);
  errno = 0;
  check("ftruncate on a read-only fd fails", ftruncate(r, 0) == -1 && errno == EBADF, "errno %d", errno);
  close(r);

  int a = open("/scratch/a.txt", O_WRONLY | O_APPEND);
  s = fdstat(a);
  check("fdstat shows the append flag", (s.fs_flags & __WASI_FDFLAGS_APPEND) != 0, "flags %x", s.fs_flags);
  lseek(a, 0, SEEK_SET);
  CHECK_EQ("append write", 3, write(a, "fgh", 3));
  CHECK_EQ("O_APPEND writes at the end", 8, size_of(a));
  close(a);

  int f = open("/scratch/a.txt", O_RDWR);
  CHECK_EQ("fcntl F_SETFL O_APPEND", 0, fcntl(f, F_SETFL, O_APPEND));
  check("fcntl F_GETFL shows O_APPEND", (fcntl(f, F_GETFL) & O_APPEND) != 0, "flags %x", fcntl(f, F_GETFL));
  lseek(f, 0, SEEK_SET);
  CHECK_EQ("write after set_flags", 1, write(f, "i", 1));
  CHECK_EQ("fd_fdstat_set_flags append writes at the end", 9, size_of(f));
  char buf[16] = {0};
  CHECK_EQ("pread the whole file", 9, pread(f, buf, sizeof buf, 0));
  check("the content is abcdefghi", memcmp(buf, "abcdefghi", 9) == 0, "got %.9s", buf);
  CHECK_EQ("fd_fdstat_set_flags with an unknown bit is INVAL", __WASI_ERRNO_INVAL, __wasi_fd_fdstat_set_flags((__wasi_fd_t)f, 0x100));
  CHECK_EQ("fcntl F_SETFL 0 clears append", 0, fcntl(f, F_SETFL, 0));
  lseek(f, 0, SEEK_SET);
  CHECK_EQ("write at the start", 1, write(f, "A", 1));
  CHECK_EQ("without append the write overwrites", 9, size_of(f));

  CHECK_EQ("set times explicitly", 0, __wasi_fd_filestat_set_times((__wasi_fd_t)f, 1000000000000000000ull, 1100000000000000000ull,
                                                               __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_MTIM));
  fstat(f, &st);
  CHECK_EQ("atime as set", 1000000000000000000ull, ns(st.st_atim));
  CHECK_EQ("mtime as set", 1100000000000000000ull, ns(st.st_mtim));
  CHECK_EQ("the size is not clobbered by the times", 9, st.st_size);
  CHECK_EQ("ATIM with ATIM_NOW is INVAL", __WASI_ERRNO_INVAL, __wasi_fd_filestat_set_times((__wasi_fd_t)f, 0, 0, __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_ATIM_NOW));
  CHECK_EQ("MTIM with MTIM_NOW is INVAL", __WASI_ERRNO_INVAL, __wasi_fd_filestat_set_times((__wasi_fd_t)f, 0, 0, __WASI_FSTFLAGS_MTIM | __WASI_FSTFLAGS_MTIM_NOW));
  CHECK_EQ("an unknown fst_flags bit is INVAL", __WASI_ERRNO_INVAL, __wasi_fd_filestat_set_times((__wasi_fd_t)f, 0, 0, 0x10));
  CHECK_EQ("MTIM_NOW", 0, __wasi_fd_filestat_set_times((__wasi_fd_t)f, 0, 0, __WASI_FSTFLAGS_MTIM_NOW));
  fstat(f, &st);
  check("MTIM_NOW sets mtime to now", ns(st.st_mtim) >= t0 - 1000000ull, "mtime %llu", ns(st.st_mtim));
  CHECK_EQ("atime kept when not asked", 1000000000000000000ull, ns(st.st_atim));

  CHECK_EQ("ftruncate to 4", 0, ftruncate(f, 4));
  CHECK_EQ("the size is 4", 4, size_of(f));

  CHECK_EQ("drop the write right", 0, __wasi_fd_fdstat_set_rights((__wasi_fd_t)f, R_READ | __WASI_RIGHTS_FD_SEEK | __WASI_RIGHTS_FD_FILESTAT_GET, 0));
  s = fdstat(f);
  CHECK_EQ("fdstat shows the narrowed rights", R_READ | __WASI_RIGHTS_FD_SEEK | __WASI_RIGHTS_FD_FILESTAT_GET, s.fs_rights_base);
  errno = 0;
  check("write without the right fails with EBADF", write(f, "x", 1) == -1 && errno == EBADF, "errno %d", errno);
  CHECK_EQ("adding a right back is NOTCAPABLE", __WASI_ERRNO_NOTCAPABLE, __wasi_fd_fdstat_set_rights((__wasi_fd_t)f, R_READ | R_WRITE, 0));
  close(f);

  uint8_t one;
  __wasi_iovec_t iov = {&one, 1};
  __wasi_size_t nread = 0;
  CHECK_EQ("fd_read from stdout is BADF", __WASI_ERRNO_BADF, __wasi_fd_read(1, &iov, 1, &nread));
  CHECK_EQ("fd_fdstat_get on a closed fd is BADF", __WASI_ERRNO_BADF, __wasi_fd_fdstat_get(99, &s));
  char in[8] = {0};
  CHECK_EQ("stdin still reads", 5, read(0, in, sizeof in));

  fd_rights();
  return finish();
}
