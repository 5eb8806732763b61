#!/usr/bin/env bash
# Rebuilds every sample agent from source into agents/dist/NAME.wasm.
#
#   bash agents/build.sh           build into agents/dist/
#   bash agents/build.sh --check   build into a temporary folder and compare with the
#                                  committed agents/dist/*.wasm; exit 1 naming each that differs
#
# The output is deterministic: every compiler gets paths relative to the project root,
# symbols and debug info are stripped, and nothing records a time. Building twice gives
# byte-identical files. Toolchains (see ../../shared/DESIGN.md, "Agents"):
#   C      clang-19 --target=wasm32-wasi (Debian: clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32)
#   Rust   /usr/bin/rustc 1.63 --target wasm32-wasi, std only (Debian: rustc libstd-rust-dev-wasm32 lld-14)
#   AS     npm assemblyscript + @assemblyscript/wasi-shim (in package.json)
#   WAT    npm wabt (in package.json)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

mode=build
case "${1:-}" in
  "") ;;
  --check) mode=check ;;
  *)
    echo "usage: bash agents/build.sh [--check]" >&2
    exit 2
    ;;
esac

# ------------------------------------------------------------------ toolchains
CLANG=clang-19
RUSTC=/usr/bin/rustc
ASC=node_modules/assemblyscript/bin/asc.js
WASI_SHIM=node_modules/@assemblyscript/wasi-shim/asconfig.json

missing=()
command -v "$CLANG" >/dev/null 2>&1 || missing+=("clang-19 (Debian packages: clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32)")
command -v wasm-ld-19 >/dev/null 2>&1 || missing+=("wasm-ld-19 (Debian package: lld-19)")
[[ -f /usr/lib/wasm32-wasi/libc.a ]] || missing+=("the wasm32-wasi C library (Debian package: wasi-libc)")
compgen -G "/usr/lib/llvm-19/lib/clang/19/lib/wasi/libclang_rt.builtins-wasm32.a" >/dev/null ||
  missing+=("clang's wasm32 builtins (Debian package: libclang-rt-19-dev-wasm32)")
[[ -x $RUSTC ]] || missing+=("/usr/bin/rustc (Debian package: rustc)")
compgen -G "/usr/lib/rustlib/wasm32-wasi/lib/libstd-*.rlib" >/dev/null ||
  missing+=("Rust std for wasm32-wasi (Debian package: libstd-rust-dev-wasm32)")
command -v rust-lld >/dev/null 2>&1 || missing+=("rust-lld, the Rust wasm linker (Debian packages: rustc lld-14)")
[[ -f $ASC && -f $WASI_SHIM ]] ||
  missing+=("AssemblyScript (npm packages assemblyscript and @assemblyscript/wasi-shim; run npm ci in the project root)")
[[ -f node_modules/wabt/index.js ]] || missing+=("wabt (npm package wabt; run npm ci in the project root)")
if ((${#missing[@]})); then
  echo "agents/build.sh: cannot build the agents; missing:" >&2
  printf '  - %s\n' "${missing[@]}" >&2
  echo "Install them all with: bash scripts/install.sh --toolchains" >&2
  echo "  (Debian: apt-get install clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32 rustc libstd-rust-dev-wasm32 lld-14)" >&2
  exit 1
fi

OUT=$(mktemp -d "${TMPDIR:-/tmp}/agents-build.XXXXXX")
rust_pid=
sqlite_pid=
cleanup() {
  if [[ -n $rust_pid ]] && kill "$rust_pid" 2>/dev/null; then wait "$rust_pid" 2>/dev/null || true; fi
  if [[ -n $sqlite_pid ]] && kill "$sqlite_pid" 2>/dev/null; then wait "$sqlite_pid" 2>/dev/null || true; fi
  rm -rf "$OUT"
}
trap cleanup EXIT

# -------------------------------------------------------------------------- C
# Compile and link apart: a link step that sees -O runs whatever `wasm-opt` is first on
# PATH (npm puts binaryen's there), which would make the output depend on the caller's PATH.
# (clang-19's --no-wasm-opt skips the link step altogether.)
"$CLANG" --target=wasm32-wasi --sysroot=/usr -O2 -c -Wall -Wextra -Werror \
  -ffile-prefix-map="$ROOT"=. agents/text-stats/text_stats.c -o "$OUT/text_stats.o"
"$CLANG" --target=wasm32-wasi --sysroot=/usr -Wl,--strip-all "$OUT/text_stats.o" -o "$OUT/text-stats.wasm"
rm "$OUT/text_stats.o"

# classify (a program of dist/programs/: text lines in, not a JSON agent) calls the node's model
# through the agent_model host import (declared at upload: config {"imports":["agent_model"]});
# wasm-ld leaves functions with an import_module as imports.
mkdir -p "$OUT/programs"
"$CLANG" --target=wasm32-wasi --sysroot=/usr -O2 -c -Wall -Wextra -Werror \
  -ffile-prefix-map="$ROOT"=. agents/classify/classify.c -o "$OUT/programs/classify.o"
"$CLANG" --target=wasm32-wasi --sysroot=/usr -Wl,--strip-all "$OUT/programs/classify.o" -o "$OUT/programs/classify.wasm"
rm "$OUT/programs/classify.o"

# WASI preview1 test programs, one per function family (agents/wasi-tests/*.c, sharing
# check.h): built the same way into dist/wasi-tests/, apart from the sample agents.
mkdir -p "$OUT/wasi-tests"
for src in agents/wasi-tests/*.c; do
  name=$(basename "$src" .c)
  "$CLANG" --target=wasm32-wasi --sysroot=/usr -O2 -c -Wall -Wextra -Werror \
    -ffile-prefix-map="$ROOT"=. "$src" -o "$OUT/wasi-tests/$name.o"
  "$CLANG" --target=wasm32-wasi --sysroot=/usr -Wl,--strip-all "$OUT/wasi-tests/$name.o" -o "$OUT/wasi-tests/$name.wasm"
  rm "$OUT/wasi-tests/$name.o"
done

# ------------------------------------------------------------ C: WASI programs
# Real programs that are not JSON agents, built into dist/programs/. SQLite comes from the
# amalgamation better-sqlite3 ships (pinned by package-lock; a tarball in newer releases is
# unpacked into the temp folder); its source is never copied into the project. Locking:
# wasi-libc has no fcntl locks, so the unix VFS runs with "unix-none" (one process per
# sandbox); no WAL (no shared memory); temp files in memory (no /tmp). The feature set is
# better-sqlite3's, so a test can compare results with it. The slowest C step (about
# 1.5 min on two cores), so it runs in the background beside Rust.
SQLITE_DIR=node_modules/better-sqlite3/deps/sqlite3
if [[ ! -f $SQLITE_DIR/sqlite3.c ]]; then
  tarball=$(compgen -G "node_modules/better-sqlite3/deps/sqlite3*.tar.gz" | head -n 1 || true)
  [[ -n $tarball ]] || { echo "agents/build.sh: no SQLite amalgamation under node_modules/better-sqlite3/deps/ (run npm ci)" >&2; exit 1; }
  mkdir -p "$OUT/sqlite-src"
  tar -xzf "$tarball" -C "$OUT/sqlite-src" --strip-components=1
  SQLITE_DIR=$OUT/sqlite-src
fi
SQLITE_DEFINES=(
  -DSQLITE_THREADSAFE=0 -DSQLITE_OMIT_LOAD_EXTENSION -DSQLITE_OMIT_WAL
  '-DSQLITE_DEFAULT_UNIX_VFS="unix-none"' -DSQLITE_TEMP_STORE=3 -DSQLITE_USE_URI=0
  -DSQLITE_DEFAULT_MEMSTATUS=0 -DSQLITE_DEFAULT_FOREIGN_KEYS=1 -DSQLITE_DQS=0
  -DSQLITE_OMIT_DEPRECATED -DSQLITE_OMIT_SHARED_CACHE -DSQLITE_OMIT_PROGRESS_CALLBACK
  -DSQLITE_LIKE_DOESNT_MATCH_BLOBS -DSQLITE_ENABLE_MATH_FUNCTIONS -DSQLITE_ENABLE_PERCENTILE
  -DSQLITE_ENABLE_FTS3 -DSQLITE_ENABLE_FTS3_PARENTHESIS -DSQLITE_ENABLE_FTS4 -DSQLITE_ENABLE_FTS5
  -DSQLITE_ENABLE_RTREE -DSQLITE_ENABLE_GEOPOLY -DSQLITE_ENABLE_STAT4 -DSQLITE_ENABLE_DBSTAT_VTAB
  -DSQLITE_ENABLE_COLUMN_METADATA -DSQLITE_ENABLE_UPDATE_DELETE_LIMIT -DSQLITE_SOUNDEX
)
mkdir -p "$OUT/programs"
(
  "$CLANG" --target=wasm32-wasi --sysroot=/usr -O2 -c -D_WASI_EMULATED_MMAN "${SQLITE_DEFINES[@]}" \
    -ffile-prefix-map="$ROOT"=. -ffile-prefix-map="$OUT"=. "$SQLITE_DIR/sqlite3.c" -o "$OUT/programs/sqlite3.o"
  "$CLANG" --target=wasm32-wasi --sysroot=/usr -O2 -c -Wall -Wextra -Werror "${SQLITE_DEFINES[@]}" -I"$SQLITE_DIR" \
    -ffile-prefix-map="$ROOT"=. -ffile-prefix-map="$OUT"=. agents/sqlite/sqlite_agent.c -o "$OUT/programs/sqlite_agent.o"
  "$CLANG" --target=wasm32-wasi --sysroot=/usr -Wl,--strip-all "$OUT/programs/sqlite_agent.o" "$OUT/programs/sqlite3.o" \
    -lwasi-emulated-mman -o "$OUT/programs/sqlite.wasm"
  rm "$OUT/programs/sqlite3.o" "$OUT/programs/sqlite_agent.o"
) &
sqlite_pid=$!

# ----------------------------------------------------------------------- Rust
# std only; LTO drops most of std's unused code; panics abort. The slowest step, so it
# runs in the background while the others build; `wait` below collects its status.
"$RUSTC" --edition 2021 --target wasm32-wasi --crate-name json_transform \
  -C opt-level=s -C lto=fat -C codegen-units=1 -C panic=abort \
  -C strip=symbols -C debuginfo=0 --remap-path-prefix="$ROOT"=. \
  -D warnings \
  agents/json-transform/main.rs -o "$OUT/json-transform.wasm" &
rust_pid=$!

# -------------------------------------------------------------- AssemblyScript
node "$ASC" agents/digest/assembly/index.ts --config "$WASI_SHIM" \
  -O3 --noAssert --runtime stub -o "$OUT/digest.wasm"

# ------------------------------------------------------------------------ WAT
# One node process for every .wat file (wabt's JavaScript build, pinned by package-lock).
node --input-type=module - "$OUT" agents/wat/*.wat <<'JS'
import { readFileSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import initWabt from 'wabt';
const [out, ...files] = process.argv.slice(2);
const wabt = await initWabt();
for (const file of files) {
  try {
    const mod = wabt.parseWat(file, readFileSync(file, 'utf8'), {});
    mod.validate();
    writeFileSync(`${out}/${basename(file, '.wat')}.wasm`, mod.toBinary({ write_debug_names: false }).buffer);
    mod.destroy();
  } catch (err) {
    console.error(`agents/build.sh: ${file} does not assemble:\n${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  }
}
JS

rust_status=0
wait "$rust_pid" || rust_status=$?
rust_pid=
((rust_status == 0)) || { echo "agents/build.sh: rustc failed on agents/json-transform/main.rs" >&2; exit 1; }
sqlite_status=0
wait "$sqlite_pid" || sqlite_status=$?
sqlite_pid=
((sqlite_status == 0)) || { echo "agents/build.sh: clang failed on SQLite or agents/sqlite/sqlite_agent.c" >&2; exit 1; }

# ------------------------------------------------------------- install / check
expected=(text-stats json-transform digest)
for f in agents/wat/*.wat; do expected+=("$(basename "$f" .wat)"); done
for name in "${expected[@]}"; do
  if [[ ! -s "$OUT/$name.wasm" ]]; then
    echo "agents/build.sh: the build wrote no $name.wasm although its compiler succeeded" >&2
    exit 1
  fi
done
built=("$OUT"/*.wasm)
if [[ $mode == build ]]; then
  mkdir -p agents/dist
  for f in "${built[@]}"; do cp "$f" "agents/dist/$(basename "$f")"; done
  for f in agents/dist/*.wasm; do
    [[ -f "$OUT/$(basename "$f")" ]] || echo "agents/build.sh: note: $f has no source any more; remove it" >&2
  done
  for f in "${built[@]}"; do printf '%8d  agents/dist/%s\n' "$(wc -c <"$f")" "$(basename "$f")"; done
  mkdir -p agents/dist/wasi-tests
  rm -f agents/dist/wasi-tests/*.wasm
  cp "$OUT"/wasi-tests/*.wasm agents/dist/wasi-tests/
  printf '%8d  agents/dist/wasi-tests/ (%d programs)\n' "$(cat "$OUT"/wasi-tests/*.wasm | wc -c)" "$(ls "$OUT"/wasi-tests/*.wasm | wc -l)"
  mkdir -p agents/dist/programs
  rm -f agents/dist/programs/*.wasm
  cp "$OUT"/programs/*.wasm agents/dist/programs/
  for f in "$OUT"/programs/*.wasm; do printf '%8d  agents/dist/programs/%s\n' "$(wc -c <"$f")" "$(basename "$f")"; done
  exit 0
fi

status=0
for f in "${built[@]}"; do
  name=agents/dist/$(basename "$f")
  if [[ ! -f $name ]]; then
    echo "agents/build.sh --check: $name is missing; run bash agents/build.sh and commit it" >&2
    status=1
  elif ! cmp -s "$f" "$name"; then
    echo "agents/build.sh --check: $name differs from a fresh build of its source; run bash agents/build.sh and commit it" >&2
    status=1
  fi
done
for f in agents/dist/*.wasm; do
  [[ -f $f ]] || continue
  if [[ ! -f "$OUT/$(basename "$f")" ]]; then
    echo "agents/build.sh --check: $f has no source; remove it" >&2
    status=1
  fi
done
for dir in wasi-tests programs; do
  for f in "$OUT/$dir"/*.wasm; do
    name=agents/dist/$dir/$(basename "$f")
    if [[ ! -f $name ]] || ! cmp -s "$f" "$name"; then
      echo "agents/build.sh --check: $name is missing or differs from a fresh build of its source; run bash agents/build.sh and commit it" >&2
      status=1
    fi
  done
  for f in agents/dist/"$dir"/*.wasm; do
    [[ -f $f ]] || continue
    if [[ ! -f "$OUT/$dir/$(basename "$f")" ]]; then
      echo "agents/build.sh --check: $f has no source; remove it" >&2
      status=1
    fi
  done
done
wasi_tests=("$OUT"/wasi-tests/*.wasm)
programs=("$OUT"/programs/*.wasm)
((status == 0)) && echo "agents/build.sh --check: all ${#built[@]} agents match their sources, all ${#wasi_tests[@]} WASI test programs and ${#programs[@]} programs"
exit "$status"
