/*
 * mounts: files in mounts. Run with a read-only mount at /in holding src.txt ("abc") and
 * sub/deep/n.bin, and a writable mount at the path in argv[2] (default /out).
 *   mounts write [OUT]        checks /in is read-only (EROFS) and readable, writes OUT/hello.txt,
 *                             OUT/sub/deep/bytes.bin (0..255), OUT/copy.txt (src.txt upper-cased),
 *                             removes OUT/gone.txt if there; prints the check report, exits 1 on a failure
 *   mounts fill OUT [handle]  writes OUT/big in 1000-byte chunks until a write fails; prints
 *                             {"written":N,"errno":E}; exits 0 with "handle", else 1
 *   mounts grow OUT SIZE [handle]  sets OUT/big to SIZE bytes with one ftruncate; prints
 *                             {"grown":0|1,"errno":E}; exits 0 when it grew or with "handle", else 1
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "check.h"

static int write_file(const char *path, const void *data, size_t len) {
  int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
  if (fd < 0) return -1;
  ssize_t n = write(fd, data, len);
  close(fd);
  return n == (ssize_t)len ? 0 : -1;
}

static int fill(const char *out, int handle) {
  char path[512];
  snprintf(path, sizeof path, "%s/big", out);
  int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
  if (fd < 0) {
    printf("{\"written\":0,\"errno\":%d}\n", errno);
    return 1;
  }
  char chunk[1000];
  memset(chunk, 'x', sizeof chunk);
  long long written = 0;
  int err = 0;
  for (;;) {
    ssize_t n = write(fd, chunk, sizeof chunk);
    if (n < 0) {
      err = errno;
      break;
    }
    written += n;
    if (written > (1ll << 30)) break;
  }
  close(fd);
  printf("{\"written\":%lld,\"errno\":%d,\"enospc\":%d}\n", written, err, err == ENOSPC);
  fflush(stdout);
  return handle ? 0 : 1;
}

static int grow(const char *out, long long size, int handle) {
  char path[512];
  snprintf(path, sizeof path, "%s/big", out);
  int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
  int ok = fd >= 0 && ftruncate(fd, (off_t)size) == 0;
  int err = ok ? 0 : errno;
  if (fd >= 0) close(fd);
  printf("{\"grown\":%d,\"errno\":%d,\"enospc\":%d}\n", ok, err, err == ENOSPC);
  fflush(stdout);
  return ok || handle ? 0 : 1;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "write";
  const char *out = argc > 2 ? argv[2] : "/out";
  if (strcmp(mode, "fill") == 0) return fill(out, argc > 3 && strcmp(argv[3], "handle") == 0);
  if (strcmp(mode, "grow") == 0) return grow(out, argc > 3 ? atoll(argv[3]) : 0, argc > 4 && strcmp(argv[4], "handle") == 0);

  char buf[256];
  int fd = open("/in/src.txt", O_RDONLY);
  check("open /in/src.txt", fd >= 0, "errno %d", errno);
  ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
  if (fd >= 0) close(fd);
  CHECK_EQ("read /in/src.txt", 3, n);
  buf[n > 0 ? n : 0] = 0;
  struct stat st;
  check("a nested file of /in", stat("/in/sub/deep/n.bin", &st) == 0 && st.st_size == 4, "errno %d size %lld", errno, (long long)st.st_size);

  errno = 0;
  check("create in /in: EROFS", open("/in/new.txt", O_CREAT | O_WRONLY, 0644) == -1 && errno == EROFS, "errno %d", errno);
  errno = 0;
  check("open /in/src.txt for writing: EROFS", open("/in/src.txt", O_WRONLY) == -1 && errno == EROFS, "errno %d", errno);
  errno = 0;
  check("truncate /in/src.txt: EROFS", open("/in/src.txt", O_RDONLY | O_TRUNC) == -1 && errno == EROFS, "errno %d", errno);
  errno = 0;
  check("unlink in /in: EROFS", unlink("/in/src.txt") == -1 && errno == EROFS, "errno %d", errno);
  errno = 0;
  check("mkdir in /in: EROFS", mkdir("/in/d", 0755) == -1 && errno == EROFS, "errno %d", errno);
  errno = 0;
  check("rmdir in /in: EROFS", rmdir("/in/sub/deep") == -1 && (errno == EROFS || errno == ENOTEMPTY), "errno %d", errno);
  char dst[512];
  snprintf(dst, sizeof dst, "%s/moved.txt", out);
  errno = 0;
  check("rename out of /in: EROFS or EXDEV", rename("/in/src.txt", dst) == -1 && (errno == EROFS || errno == EXDEV), "errno %d", errno);
  errno = 0;
  check("symlink in /in: EROFS", symlink("src.txt", "/in/ln") == -1 && errno == EROFS, "errno %d", errno);

  char path[512];
  snprintf(path, sizeof path, "%s/hello.txt", out);
  check("write hello.txt", write_file(path, "hello\n", 6) == 0, "errno %d", errno);
  snprintf(path, sizeof path, "%s/sub", out);
  check("mkdir sub", mkdir(path, 0755) == 0 || errno == EEXIST, "errno %d", errno);
  snprintf(path, sizeof path, "%s/sub/deep", out);
  check("mkdir sub/deep", mkdir(path, 0755) == 0 || errno == EEXIST, "errno %d", errno);
  unsigned char bytes[256];
  for (int i = 0; i < 256; i++) bytes[i] = (unsigned char)i;
  snprintf(path, sizeof path, "%s/sub/deep/bytes.bin", out);
  check("write bytes.bin", write_file(path, bytes, sizeof bytes) == 0, "errno %d", errno);
  for (char *p = buf; *p; p++) *p = (char)toupper((unsigned char)*p);
  snprintf(path, sizeof path, "%s/copy.txt", out);
  check("write copy.txt", write_file(path, buf, strlen(buf)) == 0, "errno %d", errno);
  snprintf(path, sizeof path, "%s/gone.txt", out);
  if (access(path, F_OK) == 0) check("unlink gone.txt", unlink(path) == 0, "errno %d", errno);
  return finish();
}
