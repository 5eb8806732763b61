/*
 * poll: poll_oneoff with several subscriptions. Run with stdin "hello" (5 bytes) and a file
 * /input/data.txt of 11 bytes.
 */
#include <fcntl.h>
#include <stdint.h>
#include <wasi/api.h>
#include "check.h"

#define MS 1000000ull

static __wasi_timestamp_t now(__wasi_clockid_t id) {
  __wasi_timestamp_t t = 0;
  if (__wasi_clock_time_get(id, 1, &t) != 0) return 0;
  return t;
}

static __wasi_subscription_t clock_sub(__wasi_userdata_t ud, __wasi_clockid_t id, __wasi_timestamp_t timeout, int abstime) {
  __wasi_subscription_t s;
  memset(&s, 0, sizeof s);
  s.userdata = ud;
  s.u.tag = __WASI_EVENTTYPE_CLOCK;
  s.u.u.clock.id = id;
  s.u.u.clock.timeout = timeout;
  s.u.u.clock.flags = abstime ? __WASI_SUBCLOCKFLAGS_SUBSCRIPTION_CLOCK_ABSTIME : 0;
  return s;
}

static __wasi_subscription_t fd_sub(__wasi_userdata_t ud, __wasi_eventtype_t type, __wasi_fd_t fd) {
  __wasi_subscription_t s;
  memset(&s, 0, sizeof s);
  s.userdata = ud;
  s.u.tag = type;
  s.u.u.fd_read.file_descriptor = fd;
  return s;
}

int main(void) {
  __wasi_subscription_t in[4];
  __wasi_event_t out[4];
  __wasi_size_t n = 0;

  CHECK_EQ("no subscriptions is INVAL", __WASI_ERRNO_INVAL, __wasi_poll_oneoff(in, out, 0, &n));

  in[0] = clock_sub(1, __WASI_CLOCKID_MONOTONIC, 300 * MS, 0);
  in[1] = clock_sub(2, __WASI_CLOCKID_MONOTONIC, 10 * MS, 0);
  __wasi_timestamp_t t0 = now(__WASI_CLOCKID_MONOTONIC);
  CHECK_EQ("two relative clocks: success", 0, __wasi_poll_oneoff(in, out, 2, &n));
  __wasi_timestamp_t took = now(__WASI_CLOCKID_MONOTONIC) - t0;
  CHECK_EQ("two relative clocks: one event", 1, n);
  CHECK_EQ("two relative clocks: the earlier fires", 2, out[0].userdata);
  CHECK_EQ("two relative clocks: type clock", __WASI_EVENTTYPE_CLOCK, out[0].type);
  CHECK_EQ("two relative clocks: error 0", 0, out[0].error);
  check("two relative clocks: waited 10 ms, not 300", took >= 10 * MS && took < 250 * MS, "took %llu ns", (unsigned long long)took);

  t0 = now(__WASI_CLOCKID_MONOTONIC);
  in[0] = clock_sub(3, __WASI_CLOCKID_MONOTONIC, t0 + 15 * MS, 1);
  CHECK_EQ("absolute monotonic: success", 0, __wasi_poll_oneoff(in, out, 1, &n));
  took = now(__WASI_CLOCKID_MONOTONIC) - t0;
  check("absolute monotonic: waits until the time", n == 1 && out[0].userdata == 3 && took >= 15 * MS && took < 250 * MS,
        "n %u ud %llu took %llu ns", (unsigned)n, (unsigned long long)out[0].userdata, (unsigned long long)took);

  t0 = now(__WASI_CLOCKID_MONOTONIC);
  in[0] = clock_sub(4, __WASI_CLOCKID_REALTIME, now(__WASI_CLOCKID_REALTIME) + 15 * MS, 1);
  CHECK_EQ("absolute realtime: success", 0, __wasi_poll_oneoff(in, out, 1, &n));
  took = now(__WASI_CLOCKID_MONOTONIC) - t0;
  check("absolute realtime: waits until the time", n == 1 && out[0].userdata == 4 && took >= 13 * MS && took < 250 * MS,
        "n %u took %llu ns", (unsigned)n, (unsigned long long)took);

  in[0] = clock_sub(5, __WASI_CLOCKID_MONOTONIC, 0, 1);
  CHECK_EQ("an absolute time in the past fires at once", 0, __wasi_poll_oneoff(in, out, 1, &n));
  CHECK_EQ("an absolute time in the past: one event", 1, n);

  in[0] = clock_sub(6, __WASI_CLOCKID_MONOTONIC, 10000 * MS, 0);
  in[1] = fd_sub(7, __WASI_EVENTTYPE_FD_READ, 0);
  t0 = now(__WASI_CLOCKID_MONOTONIC);
  CHECK_EQ("stdin read beside a 10 s clock: success", 0, __wasi_poll_oneoff(in, out, 2, &n));
  took = now(__WASI_CLOCKID_MONOTONIC) - t0;
  CHECK_EQ("stdin read: one event", 1, n);
  CHECK_EQ("stdin read: userdata", 7, out[0].userdata);
  CHECK_EQ("stdin read: type fd_read", __WASI_EVENTTYPE_FD_READ, out[0].type);
  CHECK_EQ("stdin read: error 0", 0, out[0].error);
  CHECK_EQ("stdin read: nbytes is what is left", 5, out[0].fd_readwrite.nbytes);
  check("stdin read: no wait", took < 1000 * MS, "took %llu ns", (unsigned long long)took);

  in[0] = fd_sub(8, __WASI_EVENTTYPE_FD_WRITE, 1);
  in[1] = fd_sub(9, __WASI_EVENTTYPE_FD_WRITE, 2);
  in[2] = fd_sub(10, __WASI_EVENTTYPE_FD_READ, 99);
  in[3] = fd_sub(11, __WASI_EVENTTYPE_FD_READ, 1);
  CHECK_EQ("stdout, stderr and two bad fds: success", 0, __wasi_poll_oneoff(in, out, 4, &n));
  CHECK_EQ("stdout, stderr and two bad fds: four events", 4, n);
  check("stdout writable", out[0].userdata == 8 && out[0].type == __WASI_EVENTTYPE_FD_WRITE && out[0].error == 0, "ud %llu type %u error %u",
        (unsigned long long)out[0].userdata, out[0].type, out[0].error);
  check("stderr writable", out[1].userdata == 9 && out[1].error == 0, "ud %llu error %u", (unsigned long long)out[1].userdata, out[1].error);
  check("a closed fd is an event with BADF", out[2].userdata == 10 && out[2].error == __WASI_ERRNO_BADF, "ud %llu error %u",
        (unsigned long long)out[2].userdata, out[2].error);
  check("reading stdout is an event with BADF", out[3].userdata == 11 && out[3].error == __WASI_ERRNO_BADF, "ud %llu error %u",
        (unsigned long long)out[3].userdata, out[3].error);

  int fd = open("/input/data.txt", O_RDONLY);
  check("open /input/data.txt", fd >= 0, "fd %d", fd);
  in[0] = fd_sub(12, __WASI_EVENTTYPE_FD_READ, (__wasi_fd_t)fd);
  CHECK_EQ("a regular file: success", 0, __wasi_poll_oneoff(in, out, 1, &n));
  check("a regular file is ready with its size", n == 1 && out[0].error == 0 && out[0].fd_readwrite.nbytes == 11, "n %u error %u nbytes %llu",
        (unsigned)n, out[0].error, (unsigned long long)out[0].fd_readwrite.nbytes);

  in[0] = clock_sub(13, __WASI_CLOCKID_PROCESS_CPUTIME_ID, 0, 0);
  CHECK_EQ("an unsupported clock: success", 0, __wasi_poll_oneoff(in, out, 1, &n));
  check("an unsupported clock is an event with INVAL", n == 1 && out[0].error == __WASI_ERRNO_INVAL, "n %u error %u", (unsigned)n, out[0].error);
  return finish();
}
