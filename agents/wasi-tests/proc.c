/* proc: proc_exit ends the program with the code in argv[1] (default 0) after its report. */
#include <stdlib.h>
#include <wasi/api.h>
#include "check.h"

int main(int argc, char **argv) {
  int code = argc > 1 ? atoi(argv[1]) : 0;
  check("the exit code to use is given", argc > 1, "argc %d", argc);
  int status = finish();
  if (status) return status;
  fflush(NULL);
  __wasi_proc_exit((__wasi_exitcode_t)code);
}
