/*
 * classify: asks the node's model about each line of stdin, one prompt per line, through the
 * agent_model host import (the agent is suspended while the model works; see shared/wasm MODEL_MODULE).
 *
 *   classify [--max-tokens N] [TEMPLATE]
 *
 * TEMPLATE holds "{line}" where the line goes (default "Text: {line}\nCategory:"). Empty lines are
 * skipped. Prints one JSON document: {"results":[{"line":..., "label":...}, ...], "calls": N}, where
 * a label is the model's answer up to its first newline, trimmed of spaces. When the model refuses a
 * call (a prompt too long, say) it prints the model's error on stderr and exits 3; bad usage exits 2.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((import_module("agent_model"), import_name("generate")))
int32_t agent_model_generate(const char *prompt, int32_t prompt_len, char *out, int32_t out_cap, int32_t max_tokens);
__attribute__((import_module("agent_model"), import_name("last_error")))
int32_t agent_model_last_error(char *out, int32_t out_cap);

#define ANSWER_CAP 4096

static char *read_all(size_t *len) {
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  if (!buf) return NULL;
  for (;;) {
    if (n == cap) {
      cap *= 2;
      char *more = realloc(buf, cap);
      if (!more) {
        free(buf);
        return NULL;
      }
      buf = more;
    }
    size_t got = fread(buf + n, 1, cap - n, stdin);
    n += got;
    if (got == 0) break;
  }
  *len = n;
  return buf;
}

static void put_json_string(const char *s, size_t len) {
  putchar('"');
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      putchar('\\');
      putchar(c);
    } else if (c == '\n') {
      fputs("\\n", stdout);
    } else if (c == '\r') {
      fputs("\\r", stdout);
    } else if (c == '\t') {
      fputs("\\t", stdout);
    } else if (c < 0x20) {
      printf("\\u%04x", c);
    } else {
      putchar(c);
    }
  }
  putchar('"');
}

/* The prompt for one line: the template with its first "{line}" replaced. */
static char *prompt_for(const char *tmpl, const char *line, size_t line_len, size_t *out_len) {
  const char *at = strstr(tmpl, "{line}");
  size_t before = at ? (size_t)(at - tmpl) : strlen(tmpl);
  const char *rest = at ? at + 6 : "";
  size_t after = strlen(rest);
  char *p = malloc(before + line_len + after + 1);
  if (!p) return NULL;
  memcpy(p, tmpl, before);
  memcpy(p + before, line, line_len);
  memcpy(p + before + line_len, rest, after);
  p[before + line_len + after] = 0;
  *out_len = before + line_len + after;
  return p;
}

int main(int argc, char **argv) {
  const char *tmpl = "Text: {line}\nCategory:";
  int max_tokens = 8;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--max-tokens") == 0 && i + 1 < argc) {
      max_tokens = atoi(argv[++i]);
      if (max_tokens < 1) {
        fprintf(stderr, "classify: --max-tokens takes a positive number\n");
        return 2;
      }
    } else if (argv[i][0] == '-' && argv[i][1] == '-') {
      fprintf(stderr, "classify: unknown option %s\nusage: classify [--max-tokens N] [TEMPLATE]\n", argv[i]);
      return 2;
    } else {
      tmpl = argv[i];
    }
  }
  size_t len = 0;
  char *text = read_all(&len);
  if (!text) {
    fprintf(stderr, "classify: out of memory reading stdin\n");
    return 2;
  }
  static char answer[ANSWER_CAP];
  int calls = 0, first = 1;
  fputs("{\"results\":[", stdout);
  size_t start = 0;
  for (size_t i = 0; i <= len; i++) {
    if (i < len && text[i] != '\n') continue;
    const char *line = text + start;
    size_t line_len = i - start;
    start = i + 1;
    if (line_len > 0 && line[line_len - 1] == '\r') line_len--;
    if (line_len == 0) continue;
    size_t plen = 0;
    char *prompt = prompt_for(tmpl, line, line_len, &plen);
    if (!prompt) {
      fprintf(stderr, "classify: out of memory\n");
      return 2;
    }
    int32_t n = agent_model_generate(prompt, (int32_t)plen, answer, ANSWER_CAP, max_tokens);
    free(prompt);
    calls++;
    if (n < 0) {
      char err[1024];
      int32_t m = agent_model_last_error(err, sizeof err - 1);
      if (m < 0) m = 0;
      err[m < (int32_t)sizeof err - 1 ? m : (int32_t)sizeof err - 1] = 0;
      fflush(stdout);
      fprintf(stderr, "classify: the model refused line %d (%d): %s\n", calls, n, err);
      return 3;
    }
    size_t alen = n < ANSWER_CAP ? (size_t)n : ANSWER_CAP;
    /* The label: the answer up to its first newline, without the spaces around it. */
    size_t a = 0, b = 0;
    while (b < alen && answer[b] != '\n') b++;
    while (a < b && (answer[a] == ' ' || answer[a] == '\t')) a++;
    while (b > a && (answer[b - 1] == ' ' || answer[b - 1] == '\t' || answer[b - 1] == '\r')) b--;
    if (!first) putchar(',');
    first = 0;
    fputs("{\"line\":", stdout);
    put_json_string(line, line_len);
    fputs(",\"label\":", stdout);
    put_json_string(answer + a, b - a);
    fputs(",\"answer\":", stdout);
    put_json_string(answer, alen);
    putchar('}');
  }
  printf("],\"calls\":%d}\n", calls);
  free(text);
  return 0;
}
