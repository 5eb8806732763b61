/*
 * path: symlinks, links, renames, directories, times, flag validation and rights on paths. Run
 * with an empty writable directory preopened at /scratch.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>
#include <wasi/api.h>
#include "check.h"

static __wasi_fd_t D;

static void put(const char *path, const char *text) {
  int fd = openat((int)D, path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
  if (fd >= 0) {
    ssize_t n = write(fd, text, strlen(text));
    check(path, n == (ssize_t)strlen(text), "put wrote %zd bytes", n);
    close(fd);
  }
}

static __wasi_errno_t open_with(const char *path, __wasi_lookupflags_t lookup, __wasi_oflags_t oflags, __wasi_fdflags_t fdflags) {
  __wasi_fd_t fd;
  __wasi_errno_t e = __wasi_path_open(D, lookup, path, oflags, __WASI_RIGHTS_FD_READ, 0, fdflags, &fd);
  if (e == 0) (void)__wasi_fd_close(fd);
  return e;
}

static long long read_all(const char *path, char *buf, size_t cap) {
  int fd = openat((int)D, path, O_RDONLY);
  if (fd < 0) return -errno;
  ssize_t n = read(fd, buf, cap);
  close(fd);
  return n;
}

/* ---- rights: each path function needs its right on the directory fd it acts on (docs.md "rights") */

static __wasi_rights_t DIR_BASE, DIR_INH;

/* A second fd on the preopen holding only `base` (inheriting as the preopen's); (fd_t)-1 when it cannot be made. */
static __wasi_fd_t dir_with(__wasi_rights_t base) {
  __wasi_fd_t fd;
  if (__wasi_path_open(D, 0, ".", __WASI_OFLAGS_DIRECTORY, DIR_BASE, DIR_INH, 0, &fd) != 0) return (__wasi_fd_t)-1;
  if (__wasi_fd_fdstat_set_rights(fd, base, DIR_INH) != 0) {
    (void)__wasi_fd_close(fd);
    return (__wasi_fd_t)-1;
  }
  return fd;
}

typedef __wasi_errno_t (*dir_op)(__wasi_fd_t);

/* `op` on a directory fd holding every right of the preopen but `right`: NOTCAPABLE. */
static void without(const char *name, __wasi_rights_t right, dir_op op) {
  char what[160];
  snprintf(what, sizeof what, "%s without its right is NOTCAPABLE", name);
  __wasi_fd_t fd = dir_with(DIR_BASE & ~right);
  CHECK_EQ(what, __WASI_ERRNO_NOTCAPABLE, op(fd));
  (void)__wasi_fd_close(fd);
}

/* `op` on a directory fd holding nothing but `rights`: works. */
static void with_only(const char *name, __wasi_rights_t rights, dir_op op) {
  char what[160];
  snprintf(what, sizeof what, "%s with only its right works", name);
  __wasi_fd_t fd = dir_with(rights);
  CHECK_EQ(what, 0, op(fd));
  (void)__wasi_fd_close(fd);
}

static __wasi_errno_t opened(__wasi_errno_t e, __wasi_fd_t fd) {
  if (e == 0) (void)__wasi_fd_close(fd);
  return e;
}
static __wasi_errno_t op_mkdir(__wasi_fd_t fd) { return __wasi_path_create_directory(fd, "r_dir"); }
static __wasi_errno_t op_rmdir(__wasi_fd_t fd) { return __wasi_path_remove_directory(fd, "r_dir"); }
static __wasi_errno_t op_stat(__wasi_fd_t fd) {
  __wasi_filestat_t st;
  return __wasi_path_filestat_get(fd, 0, "a.txt", &st);
}
static __wasi_errno_t op_times(__wasi_fd_t fd) { return __wasi_path_filestat_set_times(fd, 0, "a.txt", 0, 5000000000ull, __WASI_FSTFLAGS_MTIM); }
static __wasi_errno_t op_open(__wasi_fd_t fd) {
  __wasi_fd_t f;
  return opened(__wasi_path_open(fd, 0, "a.txt", 0, __WASI_RIGHTS_FD_READ, 0, 0, &f), f);
}
static __wasi_errno_t op_creat(__wasi_fd_t fd) {
  __wasi_fd_t f;
  return opened(__wasi_path_open(fd, 0, "r_new.txt", __WASI_OFLAGS_CREAT | __WASI_OFLAGS_EXCL, __WASI_RIGHTS_FD_WRITE, 0, 0, &f), f);
}
static __wasi_errno_t op_trunc(__wasi_fd_t fd) {
  __wasi_fd_t f;
  return opened(__wasi_path_open(fd, 0, "r_trunc.txt", __WASI_OFLAGS_TRUNC, __WASI_RIGHTS_FD_READ, 0, 0, &f), f);
}
static __wasi_errno_t op_symlink(__wasi_fd_t fd) { return __wasi_path_symlink("a.txt", fd, "r_ln"); }
static __wasi_errno_t op_readlink(__wasi_fd_t fd) {
  uint8_t buf[16];
  __wasi_size_t n;
  return __wasi_path_readlink(fd, "r_ln", buf, sizeof buf, &n);
}
static __wasi_errno_t op_unlink(__wasi_fd_t fd) { return __wasi_path_unlink_file(fd, "r_moved"); }
static __wasi_errno_t op_readdir(__wasi_fd_t fd) {
  uint8_t buf[256];
  __wasi_size_t used;
  return __wasi_fd_readdir(fd, buf, sizeof buf, 0, &used);
}

static __wasi_filestat_t stat_of(const char *path) {
  __wasi_filestat_t st;
  memset(&st, 0, sizeof st);
  (void)__wasi_path_filestat_get(D, 0, path, &st);
  return st;
}

static void path_rights(void) {
  __wasi_fdstat_t ds;
  CHECK_EQ("fdstat of the preopen", 0, __wasi_fd_fdstat_get(D, &ds));
  DIR_BASE = ds.fs_rights_base;
  DIR_INH = ds.fs_rights_inheriting;
  const __wasi_rights_t OPEN = __WASI_RIGHTS_PATH_OPEN;

  without("path_create_directory", __WASI_RIGHTS_PATH_CREATE_DIRECTORY, op_mkdir);
  with_only("path_create_directory", __WASI_RIGHTS_PATH_CREATE_DIRECTORY, op_mkdir);
  without("path_filestat_get", __WASI_RIGHTS_PATH_FILESTAT_GET, op_stat);
  with_only("path_filestat_get", __WASI_RIGHTS_PATH_FILESTAT_GET, op_stat);
  without("path_filestat_set_times", __WASI_RIGHTS_PATH_FILESTAT_SET_TIMES, op_times);
  CHECK_EQ("a refused set_times leaves mtime", 9000000000ull, stat_of("a.txt").mtim);
  with_only("path_filestat_set_times", __WASI_RIGHTS_PATH_FILESTAT_SET_TIMES, op_times);
  CHECK_EQ("set_times with its right sets mtime", 5000000000ull, stat_of("a.txt").mtim);

  without("path_open", OPEN, op_open);
  with_only("path_open", OPEN, op_open);
  without("path_open creat", __WASI_RIGHTS_PATH_CREATE_FILE, op_creat);
  CHECK_EQ("a refused creat makes nothing", __WASI_ERRNO_NOENT, __wasi_path_filestat_get(D, 0, "r_new.txt", &(__wasi_filestat_t){0}));
  with_only("path_open creat (path_open + path_create_file)", OPEN | __WASI_RIGHTS_PATH_CREATE_FILE, op_creat);
  {
    __wasi_fd_t fd = dir_with(DIR_BASE & ~__WASI_RIGHTS_PATH_CREATE_FILE);
    CHECK_EQ("path_open without creat works without path_create_file", 0, op_open(fd));
    (void)__wasi_fd_close(fd);
  }
  put("r_trunc.txt", "12345");
  without("path_open trunc", __WASI_RIGHTS_PATH_FILESTAT_SET_SIZE, op_trunc);
  CHECK_EQ("a refused trunc leaves the size", 5, stat_of("r_trunc.txt").size);
  with_only("path_open trunc (path_open + path_filestat_set_size)", OPEN | __WASI_RIGHTS_PATH_FILESTAT_SET_SIZE, op_trunc);
  CHECK_EQ("trunc with its right empties the file", 0, stat_of("r_trunc.txt").size);

  without("path_symlink", __WASI_RIGHTS_PATH_SYMLINK, op_symlink);
  with_only("path_symlink", __WASI_RIGHTS_PATH_SYMLINK, op_symlink);
  without("path_readlink", __WASI_RIGHTS_PATH_READLINK, op_readlink);
  with_only("path_readlink", __WASI_RIGHTS_PATH_READLINK, op_readlink);

  /* two directory fds: the source needs *_source, the target *_target */
  __wasi_fd_t no_src = dir_with(DIR_BASE & ~(__WASI_RIGHTS_PATH_LINK_SOURCE | __WASI_RIGHTS_PATH_RENAME_SOURCE));
  __wasi_fd_t no_dst = dir_with(DIR_BASE & ~(__WASI_RIGHTS_PATH_LINK_TARGET | __WASI_RIGHTS_PATH_RENAME_TARGET));
  __wasi_fd_t src = dir_with(__WASI_RIGHTS_PATH_LINK_SOURCE | __WASI_RIGHTS_PATH_RENAME_SOURCE);
  __wasi_fd_t dst = dir_with(__WASI_RIGHTS_PATH_LINK_TARGET | __WASI_RIGHTS_PATH_RENAME_TARGET);
  CHECK_EQ("path_link without path_link_source is NOTCAPABLE", __WASI_ERRNO_NOTCAPABLE, __wasi_path_link(no_src, 0, "a.txt", D, "r_hard"));
  CHECK_EQ("path_link without path_link_target is NOTCAPABLE", __WASI_ERRNO_NOTCAPABLE, __wasi_path_link(D, 0, "a.txt", no_dst, "r_hard"));
  CHECK_EQ("path_link needs only source and target rights", 0, __wasi_path_link(src, 0, "a.txt", dst, "r_hard"));
  CHECK_EQ("path_link with the target's rights on the source is NOTCAPABLE", __WASI_ERRNO_NOTCAPABLE, __wasi_path_link(dst, 0, "a.txt", src, "r_hard2"));
  CHECK_EQ("path_rename without path_rename_source is NOTCAPABLE", __WASI_ERRNO_NOTCAPABLE, __wasi_path_rename(no_src, "r_hard", D, "r_moved"));
  CHECK_EQ("path_rename without path_rename_target is NOTCAPABLE", __WASI_ERRNO_NOTCAPABLE, __wasi_path_rename(D, "r_hard", no_dst, "r_moved"));
  CHECK_EQ("a refused rename leaves the source", 2, stat_of("r_hard").nlink);
  CHECK_EQ("path_rename needs only source and target rights", 0, __wasi_path_rename(src, "r_hard", dst, "r_moved"));
  (void)__wasi_fd_close(no_src);
  (void)__wasi_fd_close(no_dst);
  (void)__wasi_fd_close(src);
  (void)__wasi_fd_close(dst);

  without("path_unlink_file", __WASI_RIGHTS_PATH_UNLINK_FILE, op_unlink);
  with_only("path_unlink_file", __WASI_RIGHTS_PATH_UNLINK_FILE, op_unlink);
  CHECK_EQ("a.txt is down to one link again", 1, stat_of("a.txt").nlink);
  without("path_remove_directory", __WASI_RIGHTS_PATH_REMOVE_DIRECTORY, op_rmdir);
  with_only("path_remove_directory", __WASI_RIGHTS_PATH_REMOVE_DIRECTORY, op_rmdir);
  CHECK_EQ("r_dir is gone", __WASI_ERRNO_NOENT, __wasi_path_filestat_get(D, 0, "r_dir", &(__wasi_filestat_t){0}));
  without("fd_readdir", __WASI_RIGHTS_FD_READDIR, op_readdir);
  with_only("fd_readdir", __WASI_RIGHTS_FD_READDIR, op_readdir);

  /* through libc: the errno is ENOTCAPABLE */
  __wasi_fd_t nomk = dir_with(DIR_BASE & ~__WASI_RIGHTS_PATH_CREATE_DIRECTORY);
  errno = 0;
  check("mkdirat on a directory without path_create_directory fails with ENOTCAPABLE", mkdirat((int)nomk, "r_x", 0755) == -1 && errno == ENOTCAPABLE,
        "errno %d", errno);
  (void)__wasi_fd_close(nomk);

  /* a directory opened with fewer rights through path_open */
  __wasi_fd_t few;
  CHECK_EQ("open the preopen again asking for path_open and path_filestat_get only", 0,
           __wasi_path_open(D, 0, ".", __WASI_OFLAGS_DIRECTORY, OPEN | __WASI_RIGHTS_PATH_FILESTAT_GET, DIR_INH, 0, &few));
  CHECK_EQ("fdstat of the narrow directory", 0, __wasi_fd_fdstat_get(few, &ds));
  CHECK_EQ("it holds what it asked for", OPEN | __WASI_RIGHTS_PATH_FILESTAT_GET, ds.fs_rights_base);
  CHECK_EQ("path_filestat_get through it works", 0, op_stat(few));
  CHECK_EQ("path_open through it works", 0, op_open(few));
  CHECK_EQ("path_create_directory through it is NOTCAPABLE", __WASI_ERRNO_NOTCAPABLE, op_mkdir(few));
  CHECK_EQ("path_unlink_file through it is NOTCAPABLE", __WASI_ERRNO_NOTCAPABLE, __wasi_path_unlink_file(few, "r_new.txt"));
  CHECK_EQ("fd_readdir on it is NOTCAPABLE", __WASI_ERRNO_NOTCAPABLE, op_readdir(few));
  (void)__wasi_fd_close(few);

  /* inheriting rights bound what is opened through a directory */
  __wasi_fd_t parent, child;
  CHECK_EQ("open the preopen with inheriting rights lacking path_unlink_file", 0,
           __wasi_path_open(D, 0, ".", __WASI_OFLAGS_DIRECTORY, DIR_BASE, DIR_INH & ~__WASI_RIGHTS_PATH_UNLINK_FILE, 0, &parent));
  CHECK_EQ("open e through it", 0, __wasi_path_open(parent, 0, "e", __WASI_OFLAGS_DIRECTORY, DIR_BASE, DIR_INH, 0, &child));
  CHECK_EQ("fdstat of e", 0, __wasi_fd_fdstat_get(child, &ds));
  CHECK_EQ("e lacks path_unlink_file", 0, ds.fs_rights_base & __WASI_RIGHTS_PATH_UNLINK_FILE);
  CHECK_EQ("unlink in e is NOTCAPABLE", __WASI_ERRNO_NOTCAPABLE, __wasi_path_unlink_file(child, "inner.txt"));
  CHECK_EQ("e/inner.txt is still there", 0, __wasi_path_filestat_get(D, 0, "e/inner.txt", &(__wasi_filestat_t){0}));
  CHECK_EQ("stat in e still works", 0, __wasi_path_filestat_get(child, 0, "inner.txt", &(__wasi_filestat_t){0}));
  (void)__wasi_fd_close(child);
  (void)__wasi_fd_close(parent);
}

int main(void) {
  int dfd = open("/scratch", O_RDONLY | O_DIRECTORY);
  check("open the preopen", dfd >= 0, "errno %d", errno);
  D = (__wasi_fd_t)dfd;
  const __wasi_lookupflags_t FOLLOW = __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW;
  __wasi_filestat_t fs;
  char buf[64];
  __wasi_size_t n = 0;

  /* directories */
  CHECK_EQ("mkdir d", 0, __wasi_path_create_directory(D, "d"));
  CHECK_EQ("mkdir d again is EXIST", __WASI_ERRNO_EXIST, __wasi_path_create_directory(D, "d"));
  put("a.txt", "hello!");
  put("d/inner.txt", "in");

  /* symlinks */
  CHECK_EQ("symlink ln -> a.txt", 0, __wasi_path_symlink("a.txt", D, "ln"));
  CHECK_EQ("symlink onto an existing path is EXIST", __WASI_ERRNO_EXIST, __wasi_path_symlink("x", D, "a.txt"));
  memset(buf, 0, sizeof buf);
  CHECK_EQ("readlink ln", 0, __wasi_path_readlink(D, "ln", (uint8_t *)buf, sizeof buf, &n));
  check("readlink gives the target", n == 5 && memcmp(buf, "a.txt", 5) == 0, "n %u buf %.16s", (unsigned)n, buf);
  memset(buf, 0, sizeof buf);
  CHECK_EQ("readlink into 3 bytes succeeds", 0, __wasi_path_readlink(D, "ln", (uint8_t *)buf, 3, &n));
  check("readlink into 3 bytes truncates", n == 3 && memcmp(buf, "a.t", 3) == 0 && buf[3] == 0, "n %u buf %.16s", (unsigned)n, buf);
  CHECK_EQ("readlink of a file is INVAL", __WASI_ERRNO_INVAL, __wasi_path_readlink(D, "a.txt", (uint8_t *)buf, sizeof buf, &n));
  CHECK_EQ("readlink of nothing is NOENT", __WASI_ERRNO_NOENT, __wasi_path_readlink(D, "none", (uint8_t *)buf, sizeof buf, &n));
  memset(buf, 0, sizeof buf);
  CHECK_EQ("reading through a symlink", 6, read_all("ln", buf, sizeof buf));
  check("reading through a symlink gives the file", memcmp(buf, "hello!", 6) == 0, "got %.16s", buf);
  CHECK_EQ("lstat ln", 0, __wasi_path_filestat_get(D, 0, "ln", &fs));
  check("lstat sees a symlink of the target's length", fs.filetype == __WASI_FILETYPE_SYMBOLIC_LINK && fs.size == 5, "type %u size %llu",
        fs.filetype, (unsigned long long)fs.size);
  CHECK_EQ("stat ln", 0, __wasi_path_filestat_get(D, FOLLOW, "ln", &fs));
  check("stat follows to the file", fs.filetype == __WASI_FILETYPE_REGULAR_FILE && fs.size == 6, "type %u size %llu", fs.filetype,
        (unsigned long long)fs.size);
  CHECK_EQ("open ln without symlink_follow is LOOP", __WASI_ERRNO_LOOP, open_with("ln", 0, 0, 0));
  errno = 0;
  check("open(O_NOFOLLOW) on a link fails with ELOOP", openat(dfd, "ln", O_RDONLY | O_NOFOLLOW) == -1 && errno == ELOOP, "errno %d", errno);
  CHECK_EQ("symlink loop1 -> loop2", 0, __wasi_path_symlink("loop2", D, "loop1"));
  CHECK_EQ("symlink loop2 -> loop1", 0, __wasi_path_symlink("loop1", D, "loop2"));
  CHECK_EQ("a symlink loop is LOOP", __WASI_ERRNO_LOOP, open_with("loop1", FOLLOW, 0, 0));
  CHECK_EQ("symlink dl -> d", 0, __wasi_path_symlink("d", D, "dl"));
  put("dl/through.txt", "t");
  CHECK_EQ("a file made through a dir link lands in the dir", 0, __wasi_path_filestat_get(D, 0, "d/through.txt", &fs));
  CHECK_EQ("symlink chain -> dl/../a.txt", 0, __wasi_path_symlink("dl/../a.txt", D, "chain"));
  CHECK_EQ("a chain of links with .. resolves", 6, read_all("chain", buf, sizeof buf));
  CHECK_EQ("symlink abs -> /etc/passwd", 0, __wasi_path_symlink("/etc/passwd", D, "abs"));
  CHECK_EQ("following an absolute link is NOTCAPABLE", __WASI_ERRNO_NOTCAPABLE, open_with("abs", FOLLOW, 0, 0));
  CHECK_EQ("symlink up -> ../../x", 0, __wasi_path_symlink("../../x", D, "up"));
  CHECK_EQ("following a link out of the preopen is NOTCAPABLE", __WASI_ERRNO_NOTCAPABLE, open_with("up", FOLLOW, 0, 0));
  CHECK_EQ("symlink dangling -> nowhere", 0, __wasi_path_symlink("nowhere", D, "dangling"));
  CHECK_EQ("following a dangling link is NOENT", __WASI_ERRNO_NOENT, open_with("dangling", FOLLOW, 0, 0));
  CHECK_EQ("mkdir onto a dangling link is EXIST", __WASI_ERRNO_EXIST, __wasi_path_create_directory(D, "dangling"));
  CHECK_EQ("unlink a link removes the link", 0, __wasi_path_unlink_file(D, "dangling"));
  CHECK_EQ("the link is gone", __WASI_ERRNO_NOENT, __wasi_path_filestat_get(D, 0, "dangling", &fs));
  CHECK_EQ("rmdir of a link to a dir is NOTDIR", __WASI_ERRNO_NOTDIR, __wasi_path_remove_directory(D, "dl"));

  DIR *dir = fdopendir(openat(dfd, ".", O_RDONLY | O_DIRECTORY));
  int saw_link = 0;
  for (struct dirent *e; dir && (e = readdir(dir));) saw_link |= strcmp(e->d_name, "ln") == 0 && e->d_type == DT_LNK;
  if (dir) closedir(dir);
  check("readdir lists the link as DT_LNK", saw_link, "not seen");

  /* hard links */
  CHECK_EQ("link b.txt to a.txt", 0, __wasi_path_link(D, 0, "a.txt", D, "b.txt"));
  CHECK_EQ("stat a.txt", 0, __wasi_path_filestat_get(D, 0, "a.txt", &fs));
  CHECK_EQ("nlink is 2", 2, fs.nlink);
  __wasi_inode_t ino = fs.ino;
  CHECK_EQ("stat b.txt", 0, __wasi_path_filestat_get(D, 0, "b.txt", &fs));
  CHECK_EQ("both names are one inode", ino, fs.ino);
  CHECK_EQ("link onto an existing path is EXIST", __WASI_ERRNO_EXIST, __wasi_path_link(D, 0, "a.txt", D, "b.txt"));
  CHECK_EQ("link onto an existing dir is EXIST", __WASI_ERRNO_EXIST, __wasi_path_link(D, 0, "a.txt", D, "d"));
  CHECK_EQ("link of a directory is PERM", __WASI_ERRNO_PERM, __wasi_path_link(D, 0, "d", D, "d2"));
  CHECK_EQ("link of nothing is NOENT", __WASI_ERRNO_NOENT, __wasi_path_link(D, 0, "none", D, "n2"));
  CHECK_EQ("link with symlink_follow links the target", 0, __wasi_path_link(D, FOLLOW, "ln", D, "c.txt"));
  CHECK_EQ("stat c.txt", 0, __wasi_path_filestat_get(D, 0, "c.txt", &fs));
  check("c.txt is the file", fs.filetype == __WASI_FILETYPE_REGULAR_FILE && fs.ino == ino, "type %u", fs.filetype);
  CHECK_EQ("link without follow links the link", 0, __wasi_path_link(D, 0, "ln", D, "ln2"));
  CHECK_EQ("lstat ln2", 0, __wasi_path_filestat_get(D, 0, "ln2", &fs));
  CHECK_EQ("ln2 is a link", __WASI_FILETYPE_SYMBOLIC_LINK, fs.filetype);
  CHECK_EQ("unlink b.txt", 0, __wasi_path_unlink_file(D, "b.txt"));
  CHECK_EQ("unlink c.txt", 0, __wasi_path_unlink_file(D, "c.txt"));
  CHECK_EQ("stat a.txt after unlinks", 0, __wasi_path_filestat_get(D, 0, "a.txt", &fs));
  CHECK_EQ("nlink is back to 1", 1, fs.nlink);

  /* renames */
  CHECK_EQ("rename d/ to e/", 0, __wasi_path_rename(D, "d/", D, "e/"));
  CHECK_EQ("e holds d's files", 0, __wasi_path_filestat_get(D, 0, "e/inner.txt", &fs));
  CHECK_EQ("d is gone", __WASI_ERRNO_NOENT, __wasi_path_filestat_get(D, 0, "d", &fs));
  CHECK_EQ("rename a file with a trailing slash is NOTDIR", __WASI_ERRNO_NOTDIR, __wasi_path_rename(D, "a.txt/", D, "x.txt"));
  CHECK_EQ("rename a file onto a trailing slash is NOTDIR", __WASI_ERRNO_NOTDIR, __wasi_path_rename(D, "a.txt", D, "x.txt/"));
  CHECK_EQ("rename a file onto a directory is ISDIR", __WASI_ERRNO_ISDIR, __wasi_path_rename(D, "a.txt", D, "e"));
  CHECK_EQ("mkdir f", 0, __wasi_path_create_directory(D, "f"));
  CHECK_EQ("rename a directory onto a file is NOTDIR", __WASI_ERRNO_NOTDIR, __wasi_path_rename(D, "f", D, "a.txt"));
  CHECK_EQ("rename a directory onto a non-empty one is NOTEMPTY", __WASI_ERRNO_NOTEMPTY, __wasi_path_rename(D, "f", D, "e"));
  CHECK_EQ("rename a directory into itself is INVAL", __WASI_ERRNO_INVAL, __wasi_path_rename(D, "e", D, "e/sub"));
  CHECK_EQ("mkdir g", 0, __wasi_path_create_directory(D, "g"));
  CHECK_EQ("rename a directory onto an empty one", 0, __wasi_path_rename(D, "f", D, "g"));
  put("y.txt", "yy");
  CHECK_EQ("rename a file onto a file replaces it", 0, __wasi_path_rename(D, "y.txt", D, "a2.txt"));
  CHECK_EQ("rename of nothing is NOENT", __WASI_ERRNO_NOENT, __wasi_path_rename(D, "none", D, "z"));
  CHECK_EQ("rename a link moves the link", 0, __wasi_path_rename(D, "ln2", D, "ln3"));
  CHECK_EQ("lstat ln3", 0, __wasi_path_filestat_get(D, 0, "ln3", &fs));
  CHECK_EQ("ln3 is still a link", __WASI_FILETYPE_SYMBOLIC_LINK, fs.filetype);

  /* removal */
  CHECK_EQ("rmdir a non-empty directory is NOTEMPTY", __WASI_ERRNO_NOTEMPTY, __wasi_path_remove_directory(D, "e"));
  CHECK_EQ("rmdir a file is NOTDIR", __WASI_ERRNO_NOTDIR, __wasi_path_remove_directory(D, "a.txt"));
  CHECK_EQ("unlink a directory is ISDIR", __WASI_ERRNO_ISDIR, __wasi_path_unlink_file(D, "e"));
  CHECK_EQ("unlink a file with a trailing slash is NOTDIR", __WASI_ERRNO_NOTDIR, __wasi_path_unlink_file(D, "a.txt/"));
  CHECK_EQ("rmdir an empty directory", 0, __wasi_path_remove_directory(D, "g"));

  /* times on paths */
  CHECK_EQ("path_filestat_set_times", 0, __wasi_path_filestat_set_times(D, 0, "a.txt", 7000000000ull, 8000000000ull, __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_MTIM));
  CHECK_EQ("stat after set_times", 0, __wasi_path_filestat_get(D, 0, "a.txt", &fs));
  check("the times are kept", fs.atim == 7000000000ull && fs.mtim == 8000000000ull && fs.size == 6, "atim %llu mtim %llu size %llu",
        (unsigned long long)fs.atim, (unsigned long long)fs.mtim, (unsigned long long)fs.size);
  CHECK_EQ("path ATIM with ATIM_NOW is INVAL", __WASI_ERRNO_INVAL,
           __wasi_path_filestat_set_times(D, 0, "a.txt", 0, 0, __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_ATIM_NOW));
  CHECK_EQ("path MTIM with MTIM_NOW is INVAL", __WASI_ERRNO_INVAL,
           __wasi_path_filestat_set_times(D, 0, "a.txt", 0, 0, __WASI_FSTFLAGS_MTIM | __WASI_FSTFLAGS_MTIM_NOW));
  CHECK_EQ("set_times through a link with follow", 0, __wasi_path_filestat_set_times(D, FOLLOW, "ln", 0, 9000000000ull, __WASI_FSTFLAGS_MTIM));
  CHECK_EQ("stat a.txt again", 0, __wasi_path_filestat_get(D, 0, "a.txt", &fs));
  CHECK_EQ("following set the target's mtime", 9000000000ull, fs.mtim);

  /* flag validation on path_open */
  CHECK_EQ("an unknown oflags bit is INVAL", __WASI_ERRNO_INVAL, open_with("a.txt", 0, 0x10, 0));
  CHECK_EQ("an unknown fdflags bit is INVAL", __WASI_ERRNO_INVAL, open_with("a.txt", 0, 0, 0x20));
  CHECK_EQ("an unknown lookupflags bit is INVAL", __WASI_ERRNO_INVAL, open_with("a.txt", 2, 0, 0));
  CHECK_EQ("directory with creat is INVAL", __WASI_ERRNO_INVAL, open_with("newdir", 0, __WASI_OFLAGS_DIRECTORY | __WASI_OFLAGS_CREAT, 0));
  CHECK_EQ("directory with trunc is INVAL", __WASI_ERRNO_INVAL, open_with("e", 0, __WASI_OFLAGS_DIRECTORY | __WASI_OFLAGS_TRUNC, 0));
  CHECK_EQ("creat with excl on an existing file is EXIST", __WASI_ERRNO_EXIST, open_with("a.txt", 0, __WASI_OFLAGS_CREAT | __WASI_OFLAGS_EXCL, 0));
  CHECK_EQ("directory on a file is NOTDIR", __WASI_ERRNO_NOTDIR, open_with("a.txt", 0, __WASI_OFLAGS_DIRECTORY, 0));
  CHECK_EQ("a file with a trailing slash is NOTDIR", __WASI_ERRNO_NOTDIR, open_with("a.txt/", 0, 0, 0));
  CHECK_EQ("a missing file is NOENT", __WASI_ERRNO_NOENT, open_with("missing.txt", 0, 0, 0));
  CHECK_EQ("creat with a trailing slash is ISDIR", __WASI_ERRNO_ISDIR, open_with("new/", 0, __WASI_OFLAGS_CREAT, 0));
  CHECK_EQ("an absolute path is NOTCAPABLE", __WASI_ERRNO_NOTCAPABLE, open_with("/a.txt", 0, 0, 0));
  CHECK_EQ(".. above the preopen is NOTCAPABLE", __WASI_ERRNO_NOTCAPABLE, open_with("../a.txt", 0, 0, 0));
  CHECK_EQ("e/.. is the preopen itself", 0, open_with("e/..", 0, __WASI_OFLAGS_DIRECTORY, 0));
  CHECK_EQ("a path through a file is NOTDIR", __WASI_ERRNO_NOTDIR, open_with("a.txt/x", 0, 0, 0));

  path_rights();
  return finish();
}
