/* clocks: clock_res_get and clock_time_get for realtime and monotonic; INVAL for clocks we lack. */
#include <time.h>
#include <wasi/api.h>
#include "check.h"

static __wasi_timestamp_t now(__wasi_clockid_t id) {
  __wasi_timestamp_t t = 0;
  if (__wasi_clock_time_get(id, 1, &t) != 0) return 0;
  return t;
}

int main(void) {
  __wasi_timestamp_t res = 0;
  CHECK_EQ("clock_res_get realtime succeeds", 0, __wasi_clock_res_get(__WASI_CLOCKID_REALTIME, &res));
  check("realtime resolution is non-zero", res > 0, "got 0");
  res = 0;
  CHECK_EQ("clock_res_get monotonic succeeds", 0, __wasi_clock_res_get(__WASI_CLOCKID_MONOTONIC, &res));
  check("monotonic resolution is non-zero", res > 0, "got 0");
  CHECK_EQ("clock_res_get of an unsupported clock is INVAL", __WASI_ERRNO_INVAL, __wasi_clock_res_get(__WASI_CLOCKID_PROCESS_CPUTIME_ID, &res));
  CHECK_EQ("clock_res_get of clock 9 is INVAL", __WASI_ERRNO_INVAL, __wasi_clock_res_get(9, &res));
  __wasi_timestamp_t t = 0;
  CHECK_EQ("clock_time_get of an unsupported clock is INVAL", __WASI_ERRNO_INVAL, __wasi_clock_time_get(__WASI_CLOCKID_THREAD_CPUTIME_ID, 1, &t));
  __wasi_timestamp_t rt = now(__WASI_CLOCKID_REALTIME);
  check("realtime is after 2020 and before 2100", rt > 1577836800000000000ull && rt < 4102444800000000000ull, "got %llu", (unsigned long long)rt);
  __wasi_timestamp_t m1 = now(__WASI_CLOCKID_MONOTONIC), m2 = now(__WASI_CLOCKID_MONOTONIC);
  check("monotonic does not go back", m2 >= m1, "%llu then %llu", (unsigned long long)m1, (unsigned long long)m2);
  struct timespec ts = {0, 20 * 1000 * 1000};
  __wasi_timestamp_t before = now(__WASI_CLOCKID_MONOTONIC);
  CHECK_EQ("nanosleep 20 ms returns 0", 0, nanosleep(&ts, NULL));
  __wasi_timestamp_t slept = now(__WASI_CLOCKID_MONOTONIC) - before;
  check("nanosleep 20 ms sleeps at least 20 ms", slept >= 20000000ull, "slept %llu ns", (unsigned long long)slept);
  struct timespec lib;
  CHECK_EQ("libc clock_gettime(CLOCK_MONOTONIC) succeeds", 0, clock_gettime(CLOCK_MONOTONIC, &lib));
  return finish();
}
