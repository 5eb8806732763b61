/* sched: sched_yield returns success. */
#include <sched.h>
#include <wasi/api.h>
#include "check.h"

int main(void) {
  CHECK_EQ("sched_yield returns success", 0, __wasi_sched_yield());
  CHECK_EQ("sched_yield again returns success", 0, __wasi_sched_yield());
  CHECK_EQ("libc sched_yield returns 0", 0, sched_yield());
  return finish();
}
