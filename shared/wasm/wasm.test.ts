import { test } from 'node:test';
import assert from 'node:assert/strict';
import wabtInit from 'wabt';
import { AppError, LIMITS } from '..';
import { capMemory, instrumentFuel, memoryMaximumPages, validateAgentModule, FUEL_EXPORT, GROW_EXPORT } from '.';
import { thrownCode } from '../testing';

const wabt = await wabtInit();
const FEATURES = {
  multi_value: true,
  simd: true,
  bulk_memory: true,
  reference_types: true,
  sign_extension: true,
  sat_float_to_int: true,
  tail_call: true,
  mutable_globals: true,
};

function wat(src: string): Uint8Array {
  const mod = wabt.parseWat('test.wat', src, FEATURES);
  try {
    return mod.toBinary({}).buffer;
  } finally {
    mod.destroy();
  }
}


const WASI = `
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))`;

const agent = (body: string, extra = ''): Uint8Array =>
  wat(`(module ${WASI} ${extra} (memory (export "memory") 1) (func (export "_start") ${body}))`);

test('validateAgentModule accepts a WASI command and reports what it declares', () => {
  const info = validateAgentModule(agent('nop'));
  assert.deepEqual(
    info.imports.map((i) => `${i.module}.${i.name}:${i.kind}`),
    ['wasi_snapshot_preview1.fd_write:func', 'wasi_snapshot_preview1.proc_exit:func'],
  );
  assert.deepEqual(info.exports.map((e) => e.name).sort(), ['_start', 'memory']);
  assert.equal(info.initialPages, 1);
  assert.equal(info.maximumPages, null);
  const capped = validateAgentModule(wat(`(module (memory (export "memory") 2 9) (func (export "_start")))`));
  assert.equal(capped.initialPages, 2);
  assert.equal(capped.maximumPages, 9);
});

test('validateAgentModule refuses what is not an agent, with the code that says why', () => {
  const good = agent('nop');
  assert.equal(thrownCode(() => validateAgentModule(new TextEncoder().encode('#!/bin/sh\necho hi\n'))), 'WASM_INVALID');
  assert.equal(thrownCode(() => validateAgentModule(good.subarray(0, good.length - 3))), 'WASM_INVALID');
  assert.equal(thrownCode(() => validateAgentModule(good.subarray(0, 6))), 'WASM_INVALID');
  const badSection = Uint8Array.from([...good.subarray(0, 8), 0x2a, 0x00]);
  assert.equal(thrownCode(() => validateAgentModule(badSection)), 'WASM_INVALID');

  const envImport = wat(`(module (import "env" "sneaky" (func)) (memory (export "memory") 1) (func (export "_start")))`);
  assert.throws(() => validateAgentModule(envImport), (e: AppError) => e.code === 'WASM_FORBIDDEN_IMPORT' && e.message.includes('env.sneaky'));
  const importedMemory = wat(`(module (import "wasi_snapshot_preview1" "memory" (memory 1)) (export "memory" (memory 0)) (func (export "_start")))`);
  assert.throws(() => validateAgentModule(importedMemory), (e: AppError) => e.code === 'WASM_FORBIDDEN_IMPORT' && e.message.includes('memory'));
  const importedGlobal = wat(`(module (import "wasi_snapshot_preview1" "g" (global i32)) (memory (export "memory") 1) (func (export "_start")))`);
  assert.equal(thrownCode(() => validateAgentModule(importedGlobal)), 'WASM_FORBIDDEN_IMPORT');
  const importedTable = wat(`(module (import "wasi_snapshot_preview1" "t" (table 1 funcref)) (memory (export "memory") 1) (func (export "_start")))`);
  assert.equal(thrownCode(() => validateAgentModule(importedTable)), 'WASM_FORBIDDEN_IMPORT');
  const unknownWasi = wat(`(module (import "wasi_snapshot_preview1" "open_socket" (func)) (memory (export "memory") 1) (func (export "_start")))`);
  assert.equal(thrownCode(() => validateAgentModule(unknownWasi)), 'WASM_FORBIDDEN_IMPORT');

  assert.equal(thrownCode(() => validateAgentModule(wat(`(module (memory (export "memory") 1) (func (export "main")))`))), 'WASM_MISSING_EXPORT');
  assert.equal(thrownCode(() => validateAgentModule(wat(`(module (memory 1) (func (export "_start")))`))), 'WASM_MISSING_EXPORT');
  assert.equal(thrownCode(() => validateAgentModule(wat(`(module (memory (export "memory") 1) (global (export "_start") i32 (i32.const 0)))`))), 'WASM_MISSING_EXPORT');
  assert.equal(thrownCode(() => validateAgentModule(wat(`(module (memory (export "memory") 1) (func (export "_start")) (global (export "__fuel") i32 (i32.const 0)))`))), 'WASM_INVALID');

  assert.equal(thrownCode(() => validateAgentModule(wat(`(module (memory (export "memory") 1) (func $s) (start $s) (func (export "_start")))`))), 'WASM_INVALID');

  // Well formed sections, but the engine refuses the code (type error).
  const illTyped = wat(`(module (memory (export "memory") 1) (func (export "_start") (result i32) (i32.const 1)))`);
  const patched = Uint8Array.from(illTyped);
  // Swap `i32.const 1` (0x41 0x01) for `i64.const 1`: the function now returns the wrong type.
  const at = patched.findIndex((b, i) => b === 0x41 && patched[i + 1] === 0x01 && patched[i + 2] === 0x0b);
  patched[at] = 0x42;
  assert.equal(thrownCode(() => validateAgentModule(patched)), 'WASM_INVALID');

  const huge = new Uint8Array(LIMITS.maxWasmBytes + 1);
  huge.set(good);
  assert.equal(thrownCode(() => validateAgentModule(huge)), 'WASM_TOO_LARGE');
});

const GROWER = `(module
  (memory (export "memory") 1)
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
  (func (export "pages") (result i32) (memory.size)))`;

test('capMemory makes memory.grow past the cap return -1', async () => {
  const capped = capMemory(wat(GROWER), 4);
  assert.equal(memoryMaximumPages(capped), 4);
  assert.ok(WebAssembly.validate(capped as Uint8Array<ArrayBuffer>));
  const { instance } = await WebAssembly.instantiate(capped as Uint8Array<ArrayBuffer>);
  const grow = instance.exports.grow as (n: number) => number;
  assert.equal(grow(2), 1);
  assert.equal(grow(1), 3);
  assert.equal(grow(1), -1);
  assert.equal((instance.exports.pages as () => number)(), 4);

  // A smaller maximum the module sets itself stays; a larger one is lowered.
  const own = wat(`(module (memory (export "memory") 1 3) (func (export "_start")))`);
  assert.equal(memoryMaximumPages(capMemory(own, 4)), 3);
  assert.equal(memoryMaximumPages(capMemory(own, 2)), 2);
  // Deterministic.
  assert.deepEqual(capMemory(own, 2), capMemory(own, 2));

  const big = wat(`(module (memory (export "memory") 10) (func (export "_start")))`);
  assert.equal(thrownCode(() => capMemory(big, 4)), 'AGENT_MEMORY_LIMIT');
});

const LOOPER = `(module
  (memory (export "memory") 1)
  (func $spin (export "spin") (loop $l (br $l)))
  (func $count (export "count") (param $n i32) (result i32) (local $i i32)
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (local.get $i))
  (func $fib (export "fib") (param $n i32) (result i32)
    (if (result i32) (i32.lt_u (local.get $n) (i32.const 2))
      (then (local.get $n))
      (else (i32.add (call $fib (i32.sub (local.get $n) (i32.const 1)))
                     (call $fib (i32.sub (local.get $n) (i32.const 2)))))))
  (func (export "bomb") (result i32)
    (loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    (memory.size)))`;

async function fuelled(bytes: Uint8Array) {
  const out = instrumentFuel(bytes);
  assert.ok(WebAssembly.validate(out as Uint8Array<ArrayBuffer>), 'instrumented module validates');
  const { instance } = await WebAssembly.instantiate(out as Uint8Array<ArrayBuffer>);
  const fuel = instance.exports[FUEL_EXPORT] as WebAssembly.Global;
  const grow = instance.exports[GROW_EXPORT] as WebAssembly.Global;
  return { instance, fuel, grow, out };
}

test('instrumentFuel makes an endless loop trap with the fuel below zero', async () => {
  const { instance, fuel } = await fuelled(wat(LOOPER));
  fuel.value = 10_000n;
  assert.throws(() => (instance.exports.spin as () => void)(), WebAssembly.RuntimeError);
  assert.ok((fuel.value as bigint) < 0n, 'fuel is below zero after exhaustion');
});

test('instrumentFuel charges one unit per loop iteration and per entry of a calling function, deterministically', async () => {
  const bytes = wat(LOOPER);
  const { instance, fuel, out } = await fuelled(bytes);
  assert.deepEqual(instrumentFuel(bytes), out, 'same bytes in, same bytes out');
  fuel.value = 1_000_000n;
  assert.equal((instance.exports.count as (n: number) => number)(100), 100);
  // 101 loop headers (the last one exits through br_if); a function that calls nothing is free to enter.
  assert.equal(1_000_000n - (fuel.value as bigint), 101n);
  fuel.value = 1_000_000n;
  assert.equal((instance.exports.fib as (n: number) => number)(10), 55);
  assert.equal(1_000_000n - (fuel.value as bigint), 177n); // calls of naive fib(10)
  // Exactly enough fuel passes; one unit less traps.
  fuel.value = 177n;
  assert.equal((instance.exports.fib as (n: number) => number)(10), 55);
  assert.equal(fuel.value, 0n);
  fuel.value = 176n;
  assert.throws(() => (instance.exports.fib as (n: number) => number)(10), WebAssembly.RuntimeError);
});

test('instrumentFuel records failed memory.grow in __last_grow, after capMemory', async () => {
  const { instance, fuel, grow } = await fuelled(capMemory(wat(LOOPER), 8));
  fuel.value = 1_000_000n;
  assert.equal((instance.exports.bomb as () => number)(), 8);
  assert.equal(grow.value, -1);
  assert.equal((instance.exports.memory as WebAssembly.Memory).buffer.byteLength, 8 * 65536);
});

test('instrumentFuel walks every instruction family and keeps behaviour', async () => {
  const src = `(module
    (type $bin (func (param i32 i32) (result i32)))
    (memory (export "memory") 1)
    (table 2 funcref)
    (elem (i32.const 0) $add $sub)
    (global $g (mut i32) (i32.const 7))
    (data $d "hello")
    (func $add (type $bin) (i32.add (local.get 0) (local.get 1)))
    (func $sub (type $bin) (i32.sub (local.get 0) (local.get 1)))
    (func $pair (result i32 i64) (i32.const 1) (i64.const -9000000000))
    (func $tail (param i32) (result i32) (return_call $add (local.get 0) (i32.const 1)))
    (func (export "run") (result i32) (local $v v128) (local $r externref) (local $acc i32)
      ;; multi-value block type
      (block (result i32 i64) (call $pair)) (drop) (local.set $acc)
      ;; br_table and nested blocks
      (block $a (block $b (block $c (br_table $a $b $c (i32.const 1))) (unreachable)) (local.set $acc (i32.add (local.get $acc) (i32.const 10))))
      ;; call_indirect through the table
      (local.set $acc (i32.add (local.get $acc) (call_indirect (type $bin) (i32.const 5) (i32.const 3) (i32.const 1))))
      ;; sign extension and saturating truncation
      (local.set $acc (i32.add (local.get $acc) (i32.extend8_s (i32.const 0xff))))
      (local.set $acc (i32.add (local.get $acc) (i32.trunc_sat_f64_s (f64.const 2.9))))
      ;; bulk memory
      (memory.init $d (i32.const 100) (i32.const 0) (i32.const 5))
      (memory.copy (i32.const 200) (i32.const 100) (i32.const 5))
      (memory.fill (i32.const 300) (i32.const 1) (i32.const 4))
      (data.drop $d)
      (local.set $acc (i32.add (local.get $acc) (i32.load8_u offset=4 (i32.const 200))))
      ;; SIMD: const, shuffle, lanes, loads and stores
      (local.set $v (v128.const i32x4 1 2 3 4))
      (local.set $v (i8x16.shuffle 4 5 6 7 0 1 2 3 8 9 10 11 12 13 14 15 (local.get $v) (local.get $v)))
      (local.set $v (i32x4.replace_lane 3 (local.get $v) (i32.const 40)))
      (v128.store (i32.const 400) (local.get $v))
      (local.set $v (v128.load32_lane 0 (i32.const 400) (local.get $v)))
      (local.set $acc (i32.add (local.get $acc) (i32x4.extract_lane 0 (local.get $v))))
      (local.set $acc (i32.add (local.get $acc) (i32x4.extract_lane 3 (i32x4.add (local.get $v) (v128.load (i32.const 400))))))
      ;; reference types and typed select
      (local.set $r (ref.null extern))
      (local.set $acc (i32.add (local.get $acc) (ref.is_null (local.get $r))))
      (local.set $acc (select (result i32) (local.get $acc) (i32.const 0) (i32.const 1)))
      (local.set $acc (i32.add (local.get $acc) (table.size)))
      (global.set $g (i32.add (global.get $g) (i32.const 1)))
      (local.set $acc (i32.add (local.get $acc) (global.get $g)))
      (local.set $acc (call $tail (local.get $acc)))
      (i64.const 0x7fffffffffff) (drop) (f32.const 1.5) (drop)
      (local.get $acc)))`;
  const bytes = wat(src);
  const plain = (await WebAssembly.instantiate(bytes as Uint8Array<ArrayBuffer>)).instance;
  const expected = (plain.exports.run as () => number)();
  const { instance, fuel } = await fuelled(bytes);
  fuel.value = 1000n;
  assert.equal((instance.exports.run as () => number)(), expected);
  assert.ok((fuel.value as bigint) < 1000n);
});

test('instrumentFuel adds the global and exports to modules that have none', async () => {
  const bytes = wat(`(module (func $f (loop)) (start $f))`);
  const out = instrumentFuel(bytes);
  assert.ok(WebAssembly.validate(out as Uint8Array<ArrayBuffer>));
  const mod = new WebAssembly.Module(out as Uint8Array<ArrayBuffer>);
  assert.deepEqual(WebAssembly.Module.exports(mod).map((e) => `${e.name}:${e.kind}`), [`${FUEL_EXPORT}:global`, `${GROW_EXPORT}:global`]);
  // The start function runs at instantiation with fuel 0: it traps at once.
  assert.throws(() => new WebAssembly.Instance(mod), WebAssembly.RuntimeError);
  assert.equal(thrownCode(() => instrumentFuel(out)), 'WASM_INVALID');
});

test('validateAgentModule takes agent_model imports only where the version declares them, with their exact types', () => {
  const gen = '(import "agent_model" "generate" (func (param i32 i32 i32 i32 i32) (result i32)))';
  const last = '(import "agent_model" "last_error" (func (param i32 i32) (result i32)))';
  const model = wat(`(module ${WASI} ${gen} ${last} (memory (export "memory") 1) (func (export "_start")))`);
  assert.throws(() => validateAgentModule(model), (e: AppError) => e.code === 'WASM_FORBIDDEN_IMPORT' && e.message.includes('"imports":["agent_model"]'));
  const info = validateAgentModule(model, { imports: ['agent_model'] });
  assert.deepEqual(info.imports.filter((i) => i.module === 'agent_model').map((i) => i.name), ['generate', 'last_error']);
  const bad = (imp: string): string | undefined =>
    thrownCode(() => validateAgentModule(wat(`(module ${imp} (memory (export "memory") 1) (func (export "_start")))`), { imports: ['agent_model'] }));
  assert.equal(bad('(import "agent_model" "generate" (func (param i32 i32 i32 i32) (result i32)))'), 'WASM_FORBIDDEN_IMPORT', 'a parameter short');
  assert.equal(bad('(import "agent_model" "generate" (func (param i32 i32 i32 i32 i64) (result i32)))'), 'WASM_FORBIDDEN_IMPORT', 'an i64');
  assert.equal(bad('(import "agent_model" "last_error" (func (param i32 i32)))'), 'WASM_FORBIDDEN_IMPORT', 'no result');
  assert.equal(bad('(import "agent_model" "train" (func))'), 'WASM_FORBIDDEN_IMPORT', 'not a function it offers');
  assert.equal(bad('(import "agent_model" "generate" (global i32))'), 'WASM_FORBIDDEN_IMPORT', 'not a function');
  assert.equal(bad('(import "env" "generate" (func (param i32 i32 i32 i32 i32) (result i32)))'), 'WASM_FORBIDDEN_IMPORT', 'other namespaces stay closed');
});
