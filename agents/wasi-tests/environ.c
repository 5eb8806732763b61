/* environ: environ_sizes_get counts UTF-8 bytes; environ_get fills them; getenv agrees. seen: environ. */
#include <stdint.h>
#include <stdlib.h>
#include <wasi/api.h>
#include "check.h"

#define CANARY 0x5A

int main(void) {
  __wasi_size_t n = 0, size = 0;
  CHECK_EQ("environ_sizes_get returns success", 0, __wasi_environ_sizes_get(&n, &size));
  uint8_t *buf = malloc(size + 64);
  uint8_t **ptrs = malloc(sizeof(uint8_t *) * (n + 1));
  memset(buf, CANARY, size + 64);
  CHECK_EQ("environ_get returns success", 0, __wasi_environ_get(ptrs, buf));
  int intact = 1;
  for (size_t i = size; i < size + 64; i++) intact &= buf[i] == CANARY;
  check("environ_get writes no byte past environ_sizes_get's size", intact, "bytes after the buffer were overwritten");
  size_t total = 0;
  int shaped = 1, agrees = 1;
  for (size_t i = 0; i < n; i++) {
    char *kv = (char *)ptrs[i];
    total += strlen(kv) + 1;
    char *eq = strchr(kv, '=');
    shaped &= eq != NULL;
    if (eq) {
      char name[256];
      size_t len = (size_t)(eq - kv) < sizeof name - 1 ? (size_t)(eq - kv) : sizeof name - 1;
      memcpy(name, kv, len);
      name[len] = 0;
      const char *v = getenv(name);
      agrees &= v != NULL && strcmp(v, eq + 1) == 0;
    }
    note(kv);
  }
  CHECK_EQ("the buffer size is the UTF-8 bytes plus NULs", size, total);
  check("every entry is NAME=value", shaped, "an entry has no '='");
  check("getenv agrees with environ_get", agrees, "a value differs");
  return finish();
}
