/*
 * rawout: raw stdout and exit codes, for payload.stdout "text"/"base64" and okExitCodes.
 *   rawout text CODE    prints two lines of UTF-8 text on stdout, one line on stderr, exits CODE
 *   rawout bytes CODE   writes the 256 byte values 0..255 on stdout, exits CODE
 *   rawout cat CODE     copies stdin to stdout, exits CODE
 *   rawout argv CODE    prints argv, one per line, then the environment, one per line, exits CODE
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "text";
  int code = argc > 2 ? atoi(argv[2]) : 0;
  if (strcmp(mode, "text") == 0) {
    fputs("hello, w\xc3\xb6rld\nnot JSON at all\n", stdout);
    fputs("a line on stderr\n", stderr);
  } else if (strcmp(mode, "bytes") == 0) {
    unsigned char b[256];
    for (int i = 0; i < 256; i++) b[i] = (unsigned char)i;
    fwrite(b, 1, sizeof b, stdout);
  } else if (strcmp(mode, "cat") == 0) {
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) fwrite(buf, 1, n, stdout);
  } else if (strcmp(mode, "argv") == 0) {
    for (int i = 0; i < argc; i++) printf("%s\n", argv[i]);
    for (char **e = environ; *e; e++) printf("%s\n", *e);
  } else {
    fprintf(stderr, "rawout: unknown mode %s\n", mode);
    return 2;
  }
  fflush(stdout);
  return code;
}
