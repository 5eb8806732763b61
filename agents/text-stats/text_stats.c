/*
 * text-stats: counts characters, words and lines of a text and its five most
 * frequent words.
 *
 *   stdin  {"text": "..."}                       (other keys are ignored)
 *   stdout {"chars":N,"words":N,"lines":N,"topWords":[["w",n],...],
 *           "files":{"a.txt":{...same four keys...}}}   (files only if /input has *.txt)
 *
 * Definitions (stable, tested against a JavaScript reference):
 *   chars     Unicode code points (bytes that are not UTF-8 continuation bytes).
 *   words     maximal runs of bytes that are not ASCII whitespace (like `wc -w`).
 *   lines     0 for an empty text, else the count of '\n' plus one if the text
 *             does not end with '\n'.
 *   topWords  each word lower-cased (ASCII only) and trimmed of leading and
 *             trailing ASCII punctuation; empty results are skipped; the five
 *             most frequent, ties broken by byte order of the word.
 * Bad input (not a JSON object, or "text" not a string): message on stderr, exit 2.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOP_N 5

/* ------------------------------------------------------------ growable bytes */

typedef struct {
  char *data;
  size_t len, cap;
} Buf;

/* printf is avoided on purpose: it adds about 16 KB to the module. */
static void die2(const char *msg, const char *detail) {
  fputs("text-stats: ", stderr);
  fputs(msg, stderr);
  fputs(detail, stderr);
  fputs("\n", stderr);
  exit(2);
}

static void die(const char *msg) { die2(msg, ""); }

static void buf_reserve(Buf *b, size_t extra) {
  if (b->len + extra <= b->cap) return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + extra) cap *= 2;
  char *p = realloc(b->data, cap);
  if (!p) die("out of memory");
  b->data = p;
  b->cap = cap;
}

static void buf_push(Buf *b, const char *s, size_t n) {
  buf_reserve(b, n);
  memcpy(b->data + b->len, s, n);
  b->len += n;
}

static void buf_putc(Buf *b, char c) { buf_push(b, &c, 1); }

static void buf_puts(Buf *b, const char *s) { buf_push(b, s, strlen(s)); }

static void buf_putu(Buf *b, unsigned long long v) {
  char tmp[24];
  int n = sizeof tmp;
  do {
    tmp[--n] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  buf_push(b, tmp + n, sizeof tmp - (size_t)n);
}

static int read_all(FILE *f, Buf *out) {
  char chunk[4096];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) buf_push(out, chunk, n);
  return ferror(f) ? -1 : 0;
}

/* --------------------------------------------------------- tiny JSON reader */

typedef struct {
  const char *p, *end;
  int depth;
} Json;

static void ws(Json *j) {
  while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static int hex4(Json *j, unsigned *out) {
  if (j->end - j->p < 4) return -1;
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char c = j->p[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
    else return -1;
  }
  j->p += 4;
  *out = v;
  return 0;
}

static void put_utf8(Buf *b, unsigned cp) {
  char t[4];
  if (cp < 0x80) {
    buf_putc(b, (char)cp);
  } else if (cp < 0x800) {
    t[0] = (char)(0xC0 | (cp >> 6));
    t[1] = (char)(0x80 | (cp & 0x3F));
    buf_push(b, t, 2);
  } else if (cp < 0x10000) {
    t[0] = (char)(0xE0 | (cp >> 12));
    t[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    t[2] = (char)(0x80 | (cp & 0x3F));
    buf_push(b, t, 3);
  } else {
    t[0] = (char)(0xF0 | (cp >> 18));
    t[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    t[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    t[3] = (char)(0x80 | (cp & 0x3F));
    buf_push(b, t, 4);
  }
}

/* Reads a JSON string at j->p (which is at the opening quote). Decoded UTF-8
 * goes to `out` when it is not NULL. Lone surrogates become U+FFFD. */
static int read_string(Json *j, Buf *out) {
  if (j->p >= j->end || *j->p != '"') return -1;
  j->p++;
  while (j->p < j->end) {
    unsigned char c = (unsigned char)*j->p++;
    if (c == '"') return 0;
    if (c < 0x20) return -1;
    if (c != '\\') {
      if (out) buf_putc(out, (char)c);
      continue;
    }
    if (j->p >= j->end) return -1;
    char e = *j->p++;
    unsigned cp;
    switch (e) {
      case '"': cp = '"'; break;
      case '\\': cp = '\\'; break;
      case '/': cp = '/'; break;
      case 'b': cp = '\b'; break;
      case 'f': cp = '\f'; break;
      case 'n': cp = '\n'; break;
      case 'r': cp = '\r'; break;
      case 't': cp = '\t'; break;
      case 'u':
        if (hex4(j, &cp)) return -1;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          unsigned lo;
          const char *save = j->p;
          if (j->end - j->p >= 6 && j->p[0] == '\\' && j->p[1] == 'u' && (j->p += 2, hex4(j, &lo) == 0) &&
              lo >= 0xDC00 && lo <= 0xDFFF) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else {
            j->p = save;
            cp = 0xFFFD;
          }
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
          cp = 0xFFFD;
        }
        break;
      default:
        return -1;
    }
    if (out) put_utf8(out, cp);
  }
  return -1;
}

static int skip_value(Json *j);

static int skip_literal(Json *j, const char *lit) {
  size_t n = strlen(lit);
  if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0) return -1;
  j->p += n;
  return 0;
}

static int skip_number(Json *j) {
  const char *s = j->p;
  if (j->p < j->end && *j->p == '-') j->p++;
  if (j->p >= j->end) return -1;
  if (*j->p == '0') {
    j->p++;
  } else if (*j->p >= '1' && *j->p <= '9') {
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
  } else {
    return -1;
  }
  if (j->p < j->end && *j->p == '.') {
    j->p++;
    const char *d = j->p;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
    if (j->p == d) return -1;
  }
  if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
    j->p++;
    if (j->p < j->end && (*j->p == '+' || *j->p == '-')) j->p++;
    const char *d = j->p;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
    if (j->p == d) return -1;
  }
  return j->p > s ? 0 : -1;
}

static int skip_container(Json *j, char close) {
  if (++j->depth > 512) return -1;
  j->p++;
  ws(j);
  if (j->p < j->end && *j->p == close) {
    j->p++;
    j->depth--;
    return 0;
  }
  for (;;) {
    if (close == '}') {
      if (read_string(j, NULL)) return -1;
      ws(j);
      if (j->p >= j->end || *j->p != ':') return -1;
      j->p++;
    }
    if (skip_value(j)) return -1;
    ws(j);
    if (j->p >= j->end) return -1;
    if (*j->p == ',') {
      j->p++;
      ws(j);
      continue;
    }
    if (*j->p == close) {
      j->p++;
      j->depth--;
      return 0;
    }
    return -1;
  }
}

static int skip_value(Json *j) {
  ws(j);
  if (j->p >= j->end) return -1;
  switch (*j->p) {
    case '{': return skip_container(j, '}');
    case '[': return skip_container(j, ']');
    case '"': return read_string(j, NULL);
    case 't': return skip_literal(j, "true");
    case 'f': return skip_literal(j, "false");
    case 'n': return skip_literal(j, "null");
    default: return skip_number(j);
  }
}

/* Finds the top-level "text" string of the object in `in`. Returns 1 when found
 * (decoded into `text`), 0 when absent; dies on malformed input. */
static int find_text(const Buf *in, Buf *text) {
  Json j = {in->data, in->data + in->len, 0};
  int found = 0;
  ws(&j);
  if (j.p >= j.end || *j.p != '{') die("stdin must be a JSON object like {\"text\": \"...\"}");
  j.p++;
  ws(&j);
  if (j.p < j.end && *j.p == '}') {
    j.p++;
  } else {
    for (;;) {
      Buf key = {0};
      ws(&j);
      if (read_string(&j, &key)) die("malformed JSON: expected a string key");
      ws(&j);
      if (j.p >= j.end || *j.p != ':') die("malformed JSON: expected ':'");
      j.p++;
      ws(&j);
      int is_text = key.len == 4 && memcmp(key.data, "text", 4) == 0;
      free(key.data);
      if (is_text) {
        if (j.p >= j.end || *j.p != '"') die("\"text\" must be a string");
        text->len = 0; /* a repeated key: the last one wins, as in JSON.parse */
        if (read_string(&j, text)) die("malformed JSON string in \"text\"");
        found = 1;
      } else if (skip_value(&j)) {
        die("malformed JSON value");
      }
      ws(&j);
      if (j.p < j.end && *j.p == ',') {
        j.p++;
        continue;
      }
      if (j.p < j.end && *j.p == '}') {
        j.p++;
        break;
      }
      die("malformed JSON: expected ',' or '}'");
    }
  }
  ws(&j);
  if (j.p != j.end) die("trailing bytes after the JSON object");
  return found;
}

/* --------------------------------------------------------------- statistics */

typedef struct {
  char *word; /* NUL-terminated, owned */
  size_t len;
  uint32_t count;
  uint32_t hash;
} Entry;

typedef struct {
  Entry *slots;
  size_t cap, used;
} Table;

static uint32_t fnv1a(const char *s, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
  return h;
}

static void table_add(Table *t, const char *w, size_t n);

static void table_grow(Table *t) {
  Table bigger = {calloc(t->cap ? t->cap * 2 : 64, sizeof(Entry)), t->cap ? t->cap * 2 : 64, 0};
  if (!bigger.slots) die("out of memory");
  for (size_t i = 0; i < t->cap; i++) {
    Entry *e = &t->slots[i];
    if (!e->word) continue;
    size_t k = e->hash & (bigger.cap - 1);
    while (bigger.slots[k].word) k = (k + 1) & (bigger.cap - 1);
    bigger.slots[k] = *e;
    bigger.used++;
  }
  free(t->slots);
  *t = bigger;
}

static void table_add(Table *t, const char *w, size_t n) {
  if ((t->used + 1) * 4 > t->cap * 3) table_grow(t);
  uint32_t h = fnv1a(w, n);
  size_t k = h & (t->cap - 1);
  while (t->slots[k].word) {
    Entry *e = &t->slots[k];
    if (e->hash == h && e->len == n && memcmp(e->word, w, n) == 0) {
      e->count++;
      return;
    }
    k = (k + 1) & (t->cap - 1);
  }
  char *copy = malloc(n + 1);
  if (!copy) die("out of memory");
  memcpy(copy, w, n);
  copy[n] = 0;
  t->slots[k] = (Entry){copy, n, 1, h};
  t->used++;
}

static void table_free(Table *t) {
  for (size_t i = 0; i < t->cap; i++) free(t->slots[i].word);
  free(t->slots);
}

/* Whether a ranks before b: higher count, then smaller bytes. */
static int ranks_before(const Entry *a, const Entry *b) {
  if (a->count != b->count) return a->count > b->count;
  size_t n = a->len < b->len ? a->len : b->len;
  int c = memcmp(a->word, b->word, n);
  return c != 0 ? c < 0 : a->len < b->len;
}

static int is_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

static int is_punct(unsigned char c) {
  return (c >= '!' && c <= '/') || (c >= ':' && c <= '@') || (c >= '[' && c <= '`') || (c >= '{' && c <= '~');
}

static void put_json_string(Buf *b, const char *s, size_t n) {
  buf_putc(b, '"');
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      buf_putc(b, '\\');
      buf_putc(b, (char)c);
    } else if (c < 0x20) {
      static const char hex[] = "0123456789abcdef";
      char tmp[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
      buf_push(b, tmp, 6);
    } else {
      buf_putc(b, (char)c);
    }
  }
  buf_putc(b, '"');
}

/* Appends {"chars":..,"words":..,"lines":..,"topWords":[..]} for `s`. */
static void put_stats(Buf *out, const char *s, size_t n) {
  unsigned long long chars = 0, words = 0, newlines = 0;
  Table t = {0};
  Buf word = {0};
  size_t i = 0;
  for (size_t k = 0; k < n; k++) {
    unsigned char c = (unsigned char)s[k];
    if ((c & 0xC0) != 0x80) chars++;
    if (c == '\n') newlines++;
  }
  while (i < n) {
    while (i < n && is_space((unsigned char)s[i])) i++;
    if (i >= n) break;
    size_t start = i;
    while (i < n && !is_space((unsigned char)s[i])) i++;
    words++;
    size_t a = start, z = i;
    while (a < z && is_punct((unsigned char)s[a])) a++;
    while (z > a && is_punct((unsigned char)s[z - 1])) z--;
    if (a == z) continue;
    word.len = 0;
    for (size_t k = a; k < z; k++) {
      char c = s[k];
      buf_putc(&word, (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c);
    }
    table_add(&t, word.data, word.len);
  }
  unsigned long long lines = n == 0 ? 0 : newlines + (s[n - 1] != '\n');

  const Entry *top[TOP_N];
  int ntop = 0;
  for (size_t k = 0; k < t.cap; k++) {
    const Entry *e = &t.slots[k];
    if (!e->word) continue;
    int pos = ntop;
    while (pos > 0 && ranks_before(e, top[pos - 1])) pos--;
    if (pos >= TOP_N) continue;
    if (ntop < TOP_N) ntop++;
    for (int m = ntop - 1; m > pos; m--) top[m] = top[m - 1];
    top[pos] = e;
  }

  buf_puts(out, "{\"chars\":");
  buf_putu(out, chars);
  buf_puts(out, ",\"words\":");
  buf_putu(out, words);
  buf_puts(out, ",\"lines\":");
  buf_putu(out, lines);
  buf_puts(out, ",\"topWords\":[");
  for (int k = 0; k < ntop; k++) {
    if (k) buf_putc(out, ',');
    buf_putc(out, '[');
    put_json_string(out, top[k]->word, top[k]->len);
    buf_putc(out, ',');
    buf_putu(out, top[k]->count);
    buf_putc(out, ']');
  }
  buf_puts(out, "]}");
  free(word.data);
  table_free(&t);
}

/* ----------------------------------------------------------------- /input */

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int has_txt_suffix(const char *name) {
  size_t n = strlen(name);
  return n > 4 && strcmp(name + n - 4, ".txt") == 0;
}

/* Appends ,"files":{...} when /input holds *.txt files (sorted by name). */
static void put_files(Buf *out) {
  DIR *dir = opendir("/input");
  if (!dir) return;
  char **names = NULL;
  size_t count = 0, cap = 0;
  struct dirent *de;
  while ((de = readdir(dir)) != NULL) {
    if (!has_txt_suffix(de->d_name)) continue;
    if (count == cap) {
      cap = cap ? cap * 2 : 8;
      names = realloc(names, cap * sizeof *names);
      if (!names) die("out of memory");
    }
    names[count] = strdup(de->d_name);
    if (!names[count]) die("out of memory");
    count++;
  }
  closedir(dir);
  if (count == 0) return;
  qsort(names, count, sizeof *names, cmp_names);
  buf_puts(out, ",\"files\":{");
  for (size_t k = 0; k < count; k++) {
    Buf path = {0};
    buf_puts(&path, "/input/");
    buf_puts(&path, names[k]);
    buf_putc(&path, 0);
    FILE *f = fopen(path.data, "rb");
    if (!f) die2("cannot open ", path.data);
    free(path.data);
    Buf content = {0};
    if (read_all(f, &content)) die("cannot read an input file");
    fclose(f);
    if (k) buf_putc(out, ',');
    put_json_string(out, names[k], strlen(names[k]));
    buf_putc(out, ':');
    put_stats(out, content.data ? content.data : "", content.len);
    free(content.data);
    free(names[k]);
  }
  buf_putc(out, '}');
  free(names);
}

int main(void) {
  Buf in = {0}, text = {0}, out = {0};
  if (read_all(stdin, &in)) die("cannot read stdin");
  find_text(&in, &text);
  put_stats(&out, text.data ? text.data : "", text.len);
  out.len--; /* reopen the object to append "files" */
  put_files(&out);
  buf_puts(&out, "}\n");
  fwrite(out.data, 1, out.len, stdout);
  Buf log = {0};
  buf_puts(&log, "text-stats: ");
  buf_putu(&log, in.len);
  buf_puts(&log, " bytes in, ");
  buf_putu(&log, out.len);
  buf_puts(&log, " bytes out\n");
  fwrite(log.data, 1, log.len, stderr);
  return 0;
}
