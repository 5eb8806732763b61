/* args: args_sizes_get counts UTF-8 bytes and args_get fills exactly that many. seen: argv. */
#include <stdint.h>
#include <stdlib.h>
#include <wasi/api.h>
#include "check.h"

#define CANARY 0xA5

int main(int argc, char **argv) {
  __wasi_size_t n = 0, size = 0;
  CHECK_EQ("args_sizes_get returns success", 0, __wasi_args_sizes_get(&n, &size));
  CHECK_EQ("argc matches args_sizes_get", argc, n);
  uint8_t *buf = malloc(size + 64);
  uint8_t **ptrs = malloc(sizeof(uint8_t *) * (n + 1));
  memset(buf, CANARY, size + 64);
  CHECK_EQ("args_get returns success", 0, __wasi_args_get(ptrs, buf));
  int intact = 1;
  for (size_t i = size; i < size + 64; i++) intact &= buf[i] == CANARY;
  check("args_get writes no byte past args_sizes_get's size", intact, "bytes after the buffer were overwritten");
  size_t total = 0;
  int inside = 1, same = 1;
  for (size_t i = 0; i < n; i++) {
    inside &= ptrs[i] >= buf && ptrs[i] < buf + size;
    total += strlen((char *)ptrs[i]) + 1;
    same &= (int)i < argc && strcmp((char *)ptrs[i], argv[i]) == 0;
    note((char *)ptrs[i]);
  }
  check("every argv pointer lies in the buffer", inside, "a pointer is outside");
  CHECK_EQ("the buffer size is the UTF-8 bytes plus NULs", size, total);
  check("argv from args_get equals main's argv", same, "they differ");
  return finish();
}
