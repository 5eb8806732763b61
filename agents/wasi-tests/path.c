/*
 * path: symlinks, links, renames, directories, times and flag validation on paths. Run with
 * an empty writable directory preopened at /scratch.
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
  return finish();
}
