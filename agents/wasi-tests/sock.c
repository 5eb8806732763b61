/* sock: with no sockets, sock_* answer BADF for an fd that is not open, NOTSOCK for one that is. */
#include <stdint.h>
#include <wasi/api.h>
#include "check.h"

int main(void) {
  __wasi_fd_t fd = 0;
  uint8_t data[8] = {0};
  __wasi_iovec_t iov = {data, sizeof data};
  __wasi_ciovec_t ciov = {data, sizeof data};
  __wasi_size_t n = 0;
  __wasi_roflags_t ro = 0;
  CHECK_EQ("sock_accept on a closed fd is BADF", __WASI_ERRNO_BADF, __wasi_sock_accept(99, 0, &fd));
  CHECK_EQ("sock_accept on stdin is NOTSOCK", __WASI_ERRNO_NOTSOCK, __wasi_sock_accept(0, 0, &fd));
  CHECK_EQ("sock_accept on the preopen is NOTSOCK", __WASI_ERRNO_NOTSOCK, __wasi_sock_accept(3, 0, &fd));
  CHECK_EQ("sock_recv on a closed fd is BADF", __WASI_ERRNO_BADF, __wasi_sock_recv(99, &iov, 1, 0, &n, &ro));
  CHECK_EQ("sock_recv on stdin is NOTSOCK", __WASI_ERRNO_NOTSOCK, __wasi_sock_recv(0, &iov, 1, 0, &n, &ro));
  CHECK_EQ("sock_send on a closed fd is BADF", __WASI_ERRNO_BADF, __wasi_sock_send(99, &ciov, 1, 0, &n));
  CHECK_EQ("sock_send on stdout is NOTSOCK", __WASI_ERRNO_NOTSOCK, __wasi_sock_send(1, &ciov, 1, 0, &n));
  CHECK_EQ("sock_shutdown on a closed fd is BADF", __WASI_ERRNO_BADF, __wasi_sock_shutdown(99, __WASI_SDFLAGS_RD));
  CHECK_EQ("sock_shutdown on stderr is NOTSOCK", __WASI_ERRNO_NOTSOCK, __wasi_sock_shutdown(2, __WASI_SDFLAGS_WR));
  return finish();
}
