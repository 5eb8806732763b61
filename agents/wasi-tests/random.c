/* random: random_get fills buffers of any length with varied bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#include <wasi/api.h>
#include "check.h"

int main(void) {
  uint8_t a[64], b[64];
  memset(a, 0, sizeof a);
  memset(b, 0, sizeof b);
  CHECK_EQ("random_get of 0 bytes succeeds", 0, __wasi_random_get(a, 0));
  CHECK_EQ("random_get of 64 bytes succeeds", 0, __wasi_random_get(a, sizeof a));
  CHECK_EQ("a second random_get succeeds", 0, __wasi_random_get(b, sizeof b));
  check("two draws differ", memcmp(a, b, sizeof a) != 0, "they are equal");
  size_t big = 200000;
  uint8_t *c = calloc(big, 1);
  CHECK_EQ("random_get of 200000 bytes succeeds", 0, __wasi_random_get(c, (__wasi_size_t)big));
  int counts[256] = {0};
  for (size_t i = 0; i < big; i++) counts[c[i]]++;
  int min = counts[0], max = counts[0];
  for (int i = 1; i < 256; i++) {
    if (counts[i] < min) min = counts[i];
    if (counts[i] > max) max = counts[i];
  }
  check("every byte value appears, none far too often", min > 500 && max < 1100, "min %d max %d", min, max);
  uint8_t d[256];
  CHECK_EQ("getentropy succeeds", 0, getentropy(d, sizeof d));
  return finish();
}
