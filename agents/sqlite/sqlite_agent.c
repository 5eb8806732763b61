/*
 * sqlite: runs an SQL script with SQLite (the amalgamation better-sqlite3 ships,
 * compiled in by agents/build.sh; its source is never committed here).
 *
 *   sqlite [--db PATH] [SCRIPT]
 *
 *   --db PATH  the database file, created when missing (default ":memory:"); in a
 *              writable mount it comes back with the task's result.
 *   SCRIPT     a file of SQL statements and dot commands; stdin when absent or "-".
 *
 * Dot commands (a line whose first character, outside a statement, is '.'):
 *   .import FILE TABLE   reads an RFC 4180 CSV file (first row: column names) into
 *                        TABLE, created with those columns when it does not exist.
 *                        Unquoted fields that are a whole integer or real number are
 *                        bound as numbers, an empty unquoted field as NULL, the rest
 *                        as text. One transaction per import unless one is open.
 *   .csv FILE            the next statement that returns rows writes them to FILE as
 *   .json FILE           CSV (header row, CRLF line ends, RFC 4180 quoting) or as a
 *                        JSON array of objects, instead of into the summary.
 *
 * stdout: one JSON object, the summary
 *   {"sqlite":"3.x.y","statements":N,"changes":N,
 *    "imports":[{"file","table","rows"}],"outputs":[{"file","format","rows"}],
 *    "results":[{"columns":[...],"rows":[[...]],"truncated":bool}]}
 * where results holds the rows (at most 1000 each) of statements that returned
 * rows and were not sent to a file. Reals are printed with the fewest of 15 or 17
 * significant digits that read back as the same double; blobs as hex text.
 * Absolute paths are used as given (a mount may sit below directories that are not
 * mounts: see the VFS below); relative ones resolve against "/".
 * Errors: a message on stderr naming the script line; exit 1 for an SQL or I/O
 * error, exit 2 for bad usage or a bad dot command.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlite3.h"

#define MAX_RESULT_ROWS 1000

/* ------------------------------------------------------------ growable bytes */

typedef struct {
  char *data;
  size_t len, cap;
} Buf;

static void fail(int code, const char *fmt, const char *a, const char *b) {
  fputs("sqlite: ", stderr);
  fprintf(stderr, fmt, a, b);
  fputc('\n', stderr);
  exit(code);
}

static void buf_reserve(Buf *b, size_t extra) {
  if (b->len + extra + 1 <= b->cap) return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + extra + 1) cap *= 2;
  char *p = realloc(b->data, cap);
  if (!p) fail(1, "out of memory%s%s", "", "");
  b->data = p;
  b->cap = cap;
}

static void buf_push(Buf *b, const char *s, size_t n) {
  buf_reserve(b, n);
  memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = 0;
}

static void buf_str(Buf *b, const char *s) { buf_push(b, s, strlen(s)); }

static void buf_char(Buf *b, char c) { buf_push(b, &c, 1); }

static void buf_json_string(Buf *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  buf_char(b, '"');
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      buf_char(b, '\\');
      buf_char(b, (char)c);
    } else if (c == '\n') {
      buf_str(b, "\\n");
    } else if (c == '\r') {
      buf_str(b, "\\r");
    } else if (c == '\t') {
      buf_str(b, "\\t");
    } else if (c < 0x20) {
      char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
      buf_push(b, u, 6);
    } else {
      buf_char(b, (char)c);
    }
  }
  buf_char(b, '"');
}

static int read_all(FILE *f, Buf *out) {
  char chunk[65536];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) buf_push(out, chunk, n);
  if (!out->data) buf_reserve(out, 0), out->data[0] = 0;
  return ferror(f) ? -1 : 0;
}

static void read_file(const char *path, Buf *out) {
  FILE *f = fopen(path, "rb");
  if (!f) fail(1, "cannot open %s: %s", path, strerror(errno));
  if (read_all(f, out) != 0) fail(1, "cannot read %s: %s", path, strerror(errno));
  fclose(f);
}

/* ------------------------------------------------------------------- values */

/* A real with the fewest of 15 or 17 significant digits that reads back the same. */
static void format_real(double v, char *out, int size) {
  sqlite3_snprintf(size, out, "%!.15g", v);
  if (strtod(out, NULL) != v) sqlite3_snprintf(size, out, "%!.17g", v);
}

static int is_finite(double v) { return v == v && v - v == 0; }

/* Appends column i of the current row: as a JSON value, or as a CSV field. */
static void append_value(Buf *b, sqlite3_stmt *st, int i, int json) {
  static const char hex[] = "0123456789abcdef";
  char num[64];
  switch (sqlite3_column_type(st, i)) {
    case SQLITE_NULL:
      if (json) buf_str(b, "null");
      return;
    case SQLITE_INTEGER:
      sqlite3_snprintf(sizeof num, num, "%lld", (long long)sqlite3_column_int64(st, i));
      buf_str(b, num);
      return;
    case SQLITE_FLOAT: {
      double v = sqlite3_column_double(st, i);
      if (!is_finite(v)) {
        buf_str(b, json ? "null" : (v != v ? "NaN" : v > 0 ? "Inf" : "-Inf"));
        return;
      }
      format_real(v, num, sizeof num);
      buf_str(b, num);
      return;
    }
    case SQLITE_BLOB: {
      const unsigned char *p = sqlite3_column_blob(st, i);
      int n = sqlite3_column_bytes(st, i);
      if (json) buf_char(b, '"');
      for (int k = 0; k < n; k++) {
        buf_char(b, hex[p[k] >> 4]);
        buf_char(b, hex[p[k] & 15]);
      }
      if (json) buf_char(b, '"');
      return;
    }
    default: {
      const char *s = (const char *)sqlite3_column_text(st, i);
      size_t n = (size_t)sqlite3_column_bytes(st, i);
      if (json) {
        buf_json_string(b, s, n);
      } else if (strpbrk(s, ",\"\r\n") || (n && (s[0] == ' ' || s[n - 1] == ' '))) {
        buf_char(b, '"');
        for (size_t k = 0; k < n; k++) {
          if (s[k] == '"') buf_char(b, '"');
          buf_char(b, s[k]);
        }
        buf_char(b, '"');
      } else {
        buf_push(b, s, n);
      }
    }
  }
}

/* ------------------------------------------------------------------ summary */

static Buf imports, outputs, results;
static int statements;

static void list_item(Buf *list) {
  if (list->len) buf_char(list, ',');
}

/* ---------------------------------------------------------------- execution */

typedef enum { TO_SUMMARY, TO_CSV, TO_JSON } Target;

static sqlite3 *db;
static int line_of(const char *script, const char *at) {
  int line = 1;
  for (const char *p = script; p < at; p++) line += *p == '\n';
  return line;
}

static void sql_fail(const char *script, const char *at, const char *what) {
  char where[32];
  snprintf(where, sizeof where, "line %d", line_of(script, at));
  fail(1, "%s: %s", where, what);
}

/* Runs one prepared statement to its end, writing any rows where target says. */
static void run_statement(sqlite3_stmt *st, Target target, const char *file, const char *script, const char *at) {
  int cols = sqlite3_column_count(st);
  Buf out = {0};
  long rows = 0;
  int truncated = 0;
  if (cols > 0) {
    if (target == TO_CSV) {
      for (int i = 0; i < cols; i++) {
        if (i) buf_char(&out, ',');
        const char *name = sqlite3_column_name(st, i);
        buf_push(&out, name, strlen(name));
      }
      buf_str(&out, "\r\n");
    } else {
      buf_char(&out, '[');
    }
  }
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (target == TO_SUMMARY && rows >= MAX_RESULT_ROWS) {
      truncated = 1;
      continue;
    }
    if (target == TO_CSV) {
      for (int i = 0; i < cols; i++) {
        if (i) buf_char(&out, ',');
        append_value(&out, st, i, 0);
      }
      buf_str(&out, "\r\n");
    } else {
      if (rows) buf_char(&out, ',');
      buf_char(&out, target == TO_JSON ? '{' : '[');
      for (int i = 0; i < cols; i++) {
        if (i) buf_char(&out, ',');
        if (target == TO_JSON) {
          const char *name = sqlite3_column_name(st, i);
          buf_json_string(&out, name, strlen(name));
          buf_char(&out, ':');
        }
        append_value(&out, st, i, 1);
      }
      buf_char(&out, target == TO_JSON ? '}' : ']');
    }
    rows++;
  }
  if (rc != SQLITE_DONE) sql_fail(script, at, sqlite3_errmsg(db));
  statements++;
  if (cols == 0) {
    free(out.data);
    return;
  }
  if (target == TO_SUMMARY) {
    buf_char(&out, ']');
    list_item(&results);
    buf_str(&results, "{\"columns\":[");
    for (int i = 0; i < cols; i++) {
      if (i) buf_char(&results, ',');
      const char *name = sqlite3_column_name(st, i);
      buf_json_string(&results, name, strlen(name));
    }
    buf_str(&results, "],\"rows\":");
    buf_push(&results, out.data, out.len);
    buf_str(&results, truncated ? ",\"truncated\":true}" : ",\"truncated\":false}");
  } else {
    if (target == TO_JSON) buf_str(&out, "]\n");
    FILE *f = fopen(file, "wb");
    if (!f) sql_fail(script, at, strerror(errno));
    if (fwrite(out.data, 1, out.len, f) != out.len || fclose(f) != 0) sql_fail(script, at, strerror(errno));
    char num[32];
    snprintf(num, sizeof num, "%ld", rows);
    list_item(&outputs);
    buf_str(&outputs, "{\"file\":");
    buf_json_string(&outputs, file, strlen(file));
    buf_str(&outputs, target == TO_CSV ? ",\"format\":\"csv\",\"rows\":" : ",\"format\":\"json\",\"rows\":");
    buf_str(&outputs, num);
    buf_char(&outputs, '}');
  }
  free(out.data);
}

/* ----------------------------------------------------------------- CSV import */

/* Binds one CSV field: numbers as numbers, an empty unquoted field as NULL. */
static void bind_field(sqlite3_stmt *st, int i, const char *s, size_t n, int quoted) {
  if (!quoted) {
    if (n == 0) {
      sqlite3_bind_null(st, i);
      return;
    }
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s + n && errno == 0 && s[0] != ' ' && s[0] != '+') {
      sqlite3_bind_int64(st, i, v);
      return;
    }
    double d = strtod(s, &end);
    if (end == s + n && s[0] != ' ' && (s[0] == '-' || s[0] == '.' || (s[0] >= '0' && s[0] <= '9')) && is_finite(d)) {
      sqlite3_bind_double(st, i, d);
      return;
    }
  }
  sqlite3_bind_text(st, i, s, (int)n, SQLITE_TRANSIENT);
}

typedef struct {
  char *p, *end;
} Csv;

/* Reads the next field into field (NUL-terminated); returns 1 when it ends its record. */
static int csv_field(Csv *c, Buf *field, int *quoted) {
  field->len = 0;
  buf_reserve(field, 0);
  field->data[0] = 0;
  *quoted = 0;
  if (c->p < c->end && *c->p == '"') {
    *quoted = 1;
    c->p++;
    for (;;) {
      if (c->p >= c->end) fail(1, "CSV: a quoted field is not closed%s%s", "", "");
      if (*c->p == '"') {
        if (c->p + 1 < c->end && c->p[1] == '"') {
          buf_char(field, '"');
          c->p += 2;
          continue;
        }
        c->p++;
        break;
      }
      buf_char(field, *c->p++);
    }
  } else {
    char *start = c->p;
    while (c->p < c->end && *c->p != ',' && *c->p != '\n' && *c->p != '\r') c->p++;
    buf_push(field, start, (size_t)(c->p - start));
  }
  if (c->p < c->end && *c->p == ',') {
    c->p++;
    return 0;
  }
  if (c->p < c->end && *c->p == '\r') c->p++;
  if (c->p < c->end && *c->p == '\n') c->p++;
  return 1;
}

static int exec_simple(const char *sql) { return sqlite3_exec(db, sql, NULL, NULL, NULL); }

static void import_csv(const char *file, const char *table, const char *script, const char *at) {
  Buf text = {0}, field = {0}, sql = {0};
  read_file(file, &text);
  Csv c = {text.data, text.data + text.len};
  /* Header: the column names. */
  char *qtable = sqlite3_mprintf("\"%w\"", table);
  Buf create = {0};
  buf_str(&create, "CREATE TABLE IF NOT EXISTS ");
  buf_str(&create, qtable);
  buf_char(&create, '(');
  int cols = 0, quoted, end;
  if (c.p >= c.end) sql_fail(script, at, "CSV file is empty");
  do {
    end = csv_field(&c, &field, &quoted);
    char *col = sqlite3_mprintf("%s\"%w\"", cols ? "," : "", field.data);
    buf_str(&create, col);
    sqlite3_free(col);
    cols++;
  } while (!end);
  buf_char(&create, ')');
  if (exec_simple(create.data) != SQLITE_OK) sql_fail(script, at, sqlite3_errmsg(db));
  buf_str(&sql, "INSERT INTO ");
  buf_str(&sql, qtable);
  buf_str(&sql, " VALUES(");
  for (int i = 0; i < cols; i++) buf_str(&sql, i ? ",?" : "?");
  buf_char(&sql, ')');
  sqlite3_stmt *ins;
  if (sqlite3_prepare_v2(db, sql.data, -1, &ins, NULL) != SQLITE_OK) sql_fail(script, at, sqlite3_errmsg(db));
  int own_tx = sqlite3_get_autocommit(db);
  if (own_tx && exec_simple("BEGIN") != SQLITE_OK) sql_fail(script, at, sqlite3_errmsg(db));
  long rows = 0;
  while (c.p < c.end) {
    int i = 0;
    do {
      end = csv_field(&c, &field, &quoted);
      if (i < cols) bind_field(ins, i + 1, field.data, field.len, quoted);
      i++;
    } while (!end);
    if (i == 1 && field.len == 0 && !quoted) continue; /* a blank line */
    if (i != cols) {
      char msg[96];
      snprintf(msg, sizeof msg, "CSV record %ld has %d fields, the header %d", rows + 1, i, cols);
      sql_fail(script, at, msg);
    }
    if (sqlite3_step(ins) != SQLITE_DONE) sql_fail(script, at, sqlite3_errmsg(db));
    sqlite3_reset(ins);
    sqlite3_clear_bindings(ins);
    rows++;
  }
  sqlite3_finalize(ins);
  if (own_tx && exec_simple("COMMIT") != SQLITE_OK) sql_fail(script, at, sqlite3_errmsg(db));
  char num[32];
  snprintf(num, sizeof num, "%ld", rows);
  list_item(&imports);
  buf_str(&imports, "{\"file\":");
  buf_json_string(&imports, file, strlen(file));
  buf_str(&imports, ",\"table\":");
  buf_json_string(&imports, table, strlen(table));
  buf_str(&imports, ",\"rows\":");
  buf_str(&imports, num);
  buf_char(&imports, '}');
  sqlite3_free(qtable);
  free(text.data);
  free(field.data);
  free(sql.data);
  free(create.data);
}

/* ---------------------------------------------------------------------- VFS */

/*
 * The unix-none VFS, except that an absolute database path is taken as it is. The unix
 * VFS resolves symlinks by lstat-ing every prefix of the path ("/work", "/work/out", ...);
 * under WASI a prefix above a mount (a preopen at /work/out) matches no preopen, so
 * wasi-libc fails it with ENOTCAPABLE and SQLite refuses to open the file. With one
 * process per sandbox and no locks, the canonical name is not needed.
 */
static sqlite3_vfs wasi_vfs;
static sqlite3_vfs *base_vfs;

static int wasi_full_pathname(sqlite3_vfs *vfs, const char *name, int size, char *out) {
  (void)vfs;
  if (name[0] != '/') return base_vfs->xFullPathname(base_vfs, name, size, out);
  size_t n = strlen(name);
  if ((int)n >= size) return SQLITE_CANTOPEN;
  memcpy(out, name, n + 1);
  return SQLITE_OK;
}

static void register_vfs(void) {
  base_vfs = sqlite3_vfs_find("unix-none");
  if (!base_vfs) fail(1, "SQLite has no unix-none VFS%s%s", "", "");
  wasi_vfs = *base_vfs;
  wasi_vfs.zName = "wasi";
  wasi_vfs.pNext = NULL;
  wasi_vfs.xFullPathname = wasi_full_pathname;
  if (sqlite3_vfs_register(&wasi_vfs, 1) != SQLITE_OK) fail(1, "cannot register the VFS%s%s", "", "");
}

/* ------------------------------------------------------------------- script */

/* Skips whitespace and SQL comments. */
static const char *skip_blank(const char *p) {
  for (;;) {
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
    if (p[0] == '-' && p[1] == '-') {
      while (*p && *p != '\n') p++;
    } else if (p[0] == '/' && p[1] == '*') {
      const char *e = strstr(p + 2, "*/");
      p = e ? e + 2 : p + strlen(p);
    } else {
      return p;
    }
  }
}

int main(int argc, char **argv) {
  const char *db_path = ":memory:", *script_path = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--db") == 0 && i + 1 < argc) {
      db_path = argv[++i];
    } else if (argv[i][0] == '-' && argv[i][1] == '-') {
      fail(2, "unknown option %s%s (usage: sqlite [--db PATH] [SCRIPT])", argv[i], "");
    } else if (!script_path) {
      script_path = argv[i];
    } else {
      fail(2, "one script only, got %s and %s", script_path, argv[i]);
    }
  }
  Buf script = {0};
  if (!script_path || strcmp(script_path, "-") == 0) {
    if (read_all(stdin, &script) != 0) fail(1, "cannot read stdin: %s%s", strerror(errno), "");
  } else {
    read_file(script_path, &script);
  }
  register_vfs();
  if (sqlite3_open(db_path, &db) != SQLITE_OK) fail(1, "cannot open the database %s: %s", db_path, sqlite3_errmsg(db));

  Target target = TO_SUMMARY;
  char *target_file = NULL;
  const char *p = script.data;
  for (;;) {
    p = skip_blank(p);
    if (!*p) break;
    if (*p == '.') {
      const char *eol = strchr(p, '\n');
      if (!eol) eol = p + strlen(p);
      char *line = sqlite3_mprintf("%.*s", (int)(eol - p), p);
      char *words[4] = {0};
      int n = 0;
      for (char *tok = strtok(line, " \t\r"); tok && n < 4; tok = strtok(NULL, " \t\r")) words[n++] = tok;
      if (strcmp(words[0], ".import") == 0 && n == 3) {
        import_csv(words[1], words[2], script.data, p);
      } else if ((strcmp(words[0], ".csv") == 0 || strcmp(words[0], ".json") == 0) && n == 2) {
        target = words[0][1] == 'c' ? TO_CSV : TO_JSON;
        free(target_file);
        target_file = strdup(words[1]);
      } else {
        char where[32];
        snprintf(where, sizeof where, "line %d", line_of(script.data, p));
        fail(2, "%s: unknown or malformed dot command: %s", where, line);
      }
      sqlite3_free(line);
      p = eol;
      continue;
    }
    sqlite3_stmt *st;
    const char *tail;
    if (sqlite3_prepare_v2(db, p, -1, &st, &tail) != SQLITE_OK) sql_fail(script.data, p, sqlite3_errmsg(db));
    if (st) {
      int rows = sqlite3_column_count(st) > 0;
      run_statement(st, rows ? target : TO_SUMMARY, target_file, script.data, p);
      sqlite3_finalize(st);
      if (rows) target = TO_SUMMARY;
    }
    p = tail;
  }
  int changes_total = sqlite3_total_changes(db);
  if (sqlite3_close(db) != SQLITE_OK) fail(1, "cannot close the database: %s%s", sqlite3_errmsg(db), "");

  char num[32];
  Buf sum = {0};
  buf_str(&sum, "{\"sqlite\":");
  buf_json_string(&sum, sqlite3_libversion(), strlen(sqlite3_libversion()));
  snprintf(num, sizeof num, "%d", statements);
  buf_str(&sum, ",\"statements\":");
  buf_str(&sum, num);
  snprintf(num, sizeof num, "%d", changes_total);
  buf_str(&sum, ",\"changes\":");
  buf_str(&sum, num);
  buf_str(&sum, ",\"imports\":[");
  if (imports.len) buf_push(&sum, imports.data, imports.len);
  buf_str(&sum, "],\"outputs\":[");
  if (outputs.len) buf_push(&sum, outputs.data, outputs.len);
  buf_str(&sum, "],\"results\":[");
  if (results.len) buf_push(&sum, results.data, results.len);
  buf_str(&sum, "]}\n");
  fwrite(sum.data, 1, sum.len, stdout);
  return 0;
}
