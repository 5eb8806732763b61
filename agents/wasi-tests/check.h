/*
 * check.h: the reporting half of every WASI preview1 test program here.
 * Each check is a name and a condition; finish() prints one JSON object on stdout,
 *   {"ok":["name",...],"fail":["name: expected X got Y",...],"seen":[...]}
 * (and the same on stderr when anything failed) and returns the exit status:
 * 0 when every check passed, 1 otherwise.
 */
#ifndef WASI_TESTS_CHECK_H
#define WASI_TESTS_CHECK_H

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define LIST_CAP 16384

typedef struct {
  char data[LIST_CAP];
  size_t len;
  int count;
} list_t;

static list_t oks, fails, seen;

static void list_add(list_t *l, const char *s) {
  if (l->len + 8 >= LIST_CAP) return;
  if (l->count++) l->data[l->len++] = ',';
  l->data[l->len++] = '"';
  for (const unsigned char *p = (const unsigned char *)s; *p && l->len + 8 < LIST_CAP; p++) {
    if (*p == '"' || *p == '\\') {
      l->data[l->len++] = '\\';
      l->data[l->len++] = (char)*p;
    } else if (*p < 0x20) {
      l->len += (size_t)snprintf(l->data + l->len, LIST_CAP - l->len, "\\u%04x", *p);
    } else {
      l->data[l->len++] = (char)*p;
    }
  }
  l->data[l->len++] = '"';
  l->data[l->len] = 0;
}

/* Records `name` as ok when cond holds, else as "name: <printf(fmt, ...)>". */
__attribute__((format(printf, 3, 4))) static void check(const char *name, int cond, const char *fmt, ...) {
  if (cond) {
    list_add(&oks, name);
    return;
  }
  char msg[512];
  int n = snprintf(msg, sizeof msg, "%s: ", name);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg + n, sizeof msg - (size_t)n, fmt, ap);
  va_end(ap);
  list_add(&fails, msg);
}

#define CHECK_EQ(name, expected, got)                                                           \
  do {                                                                                          \
    long long e_ = (long long)(expected), g_ = (long long)(got);                                \
    check((name), e_ == g_, "expected %lld got %lld", e_, g_);                                  \
  } while (0)

__attribute__((unused)) static void note(const char *s) { list_add(&seen, s); }

static int finish(void) {
  printf("{\"ok\":[%s],\"fail\":[%s],\"seen\":[%s]}\n", oks.data, fails.data, seen.data);
  fflush(stdout);
  if (fails.count) fprintf(stderr, "{\"fail\":[%s]}\n", fails.data);
  return fails.count ? 1 : 0;
}

#endif
