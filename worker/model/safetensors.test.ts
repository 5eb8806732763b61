import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from './half';
import { parseSafetensors, tensorAsFloat32, tensorShape, writeSafetensors } from './safetensors';
import { sha256Hex } from './sha256';
import { thrownCode } from '../../shared/testing';

const enc = new TextEncoder();

/** A file from a hand-written header and a data section of `dataLen` bytes. */
function rawFile(header: unknown, dataLen: number, headerLenOverride?: number): Uint8Array {
  const h = enc.encode(JSON.stringify(header));
  const out = new Uint8Array(8 + h.length + dataLen);
  const view = new DataView(out.buffer);
  view.setUint32(0, headerLenOverride ?? h.length, true);
  out.set(h, 8);
  return out;
}


test('round trip F32/F16/BF16 with metadata, deterministic and 8-byte aligned', () => {
  const a = Float32Array.from([1, -2.5, 3.25, 0, 65504, 1e-3]);
  const b = Float32Array.from([0.5, -0.125, 7]);
  const tensors = [
    { name: 'z.f32', dtype: 'F32' as const, shape: [2, 3], data: a },
    { name: 'a.f16', dtype: 'F16' as const, shape: [2, 3], data: a },
    { name: 'm.bf16', dtype: 'BF16' as const, shape: [3], data: b },
  ];
  const bytes = writeSafetensors(tensors, { format: 'pt', note: 'x' });
  assert.deepEqual(bytes, writeSafetensors(tensors.slice().reverse(), { note: 'x', format: 'pt' }));
  const headerLen = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert.equal((8 + headerLen) % 8, 0);
  const file = parseSafetensors(bytes);
  assert.deepEqual(file.metadata, { format: 'pt', note: 'x' });
  assert.deepEqual([...file.tensors.keys()], ['a.f16', 'm.bf16', 'z.f32']);
  assert.deepEqual(tensorShape(file, 'z.f32'), [2, 3]);
  assert.deepEqual(tensorAsFloat32(file, 'z.f32'), a);
  const h = tensorAsFloat32(file, 'a.f16');
  for (let i = 0; i < a.length; i++) assert.ok(Math.abs((h[i] as number) - (a[i] as number)) <= Math.abs(a[i] as number) * 1e-3 + 1e-7);
  assert.deepEqual(tensorAsFloat32(file, 'm.bf16'), b);
});

test('half conversions: exact values, rounding, subnormals, specials', () => {
  assert.equal(f32ToF16(1), 0x3c00);
  assert.equal(f32ToF16(-2), 0xc000);
  assert.equal(f32ToF16(65504), 0x7bff);
  assert.equal(f32ToF16(65520), 0x7c00); // rounds to infinity
  assert.equal(f32ToF16(2 ** -24), 0x0001);
  assert.equal(f16ToF32(0x0001), 2 ** -24);
  assert.equal(f16ToF32(0x7c00), Infinity);
  assert.ok(Number.isNaN(f16ToF32(0x7e00)));
  assert.equal(f16ToF32(f32ToF16(0.1)), 0.0999755859375);
  // ties to even: 1 + 2^-11 is halfway between 1 and 1 + 2^-10
  assert.equal(f32ToF16(1 + 2 ** -11), 0x3c00);
  assert.equal(f32ToBf16(1), 0x3f80);
  assert.equal(bf16ToF32(0x3f80), 1);
  assert.equal(bf16ToF32(f32ToBf16(3.14159)), 3.140625);
  assert.ok(Number.isNaN(bf16ToF32(f32ToBf16(NaN))));
  for (let bits = 0; bits < 0x7c00; bits += 37) assert.equal(f32ToF16(f16ToF32(bits)), bits);
});

test('sha256 matches node:crypto', () => {
  for (const n of [0, 1, 55, 56, 63, 64, 65, 1000]) {
    const data = Uint8Array.from({ length: n }, (_, i) => (i * 31 + 7) & 0xff);
    assert.equal(sha256Hex(data), createHash('sha256').update(data).digest('hex'));
  }
});

test('lying headers are SAFETENSORS_INVALID', () => {
  const t = (shape: number[], offsets: [number, number], dtype = 'F32') => ({ dtype, shape, data_offsets: offsets });
  // byte size disagrees with shape
  assert.equal(thrownCode(() => parseSafetensors(rawFile({ a: t([2, 2], [0, 12]) }, 12))), 'SAFETENSORS_INVALID');
  // offset past the data section
  assert.equal(thrownCode(() => parseSafetensors(rawFile({ a: t([4], [0, 16]) }, 8))), 'SAFETENSORS_INVALID');
  // overlapping tensors
  assert.equal(thrownCode(() => parseSafetensors(rawFile({ a: t([2], [0, 8]), b: t([2], [4, 12]) }, 12))), 'SAFETENSORS_INVALID');
  // gap (not contiguous)
  assert.equal(thrownCode(() => parseSafetensors(rawFile({ a: t([1], [0, 4]), b: t([1], [8, 12]) }, 12))), 'SAFETENSORS_INVALID');
  // bytes left over after the last tensor
  assert.equal(thrownCode(() => parseSafetensors(rawFile({ a: t([1], [0, 4]) }, 8))), 'SAFETENSORS_INVALID');
  // header length past EOF
  assert.equal(thrownCode(() => parseSafetensors(rawFile({ a: t([1], [0, 4]) }, 4, 10_000))), 'SAFETENSORS_INVALID');
  // absurd header length
  assert.equal(thrownCode(() => parseSafetensors(rawFile({}, 0, 0xffffffff))), 'SAFETENSORS_INVALID');
  // too short, not JSON, begin > end, negative dims
  assert.equal(thrownCode(() => parseSafetensors(new Uint8Array(4))), 'SAFETENSORS_INVALID');
  const notJson = rawFile({}, 0);
  notJson[8] = 0x7b;
  notJson[9] = 0x7b;
  assert.equal(thrownCode(() => parseSafetensors(notJson)), 'SAFETENSORS_INVALID');
  assert.equal(thrownCode(() => parseSafetensors(rawFile({ a: t([0], [4, 0]) }, 4))), 'SAFETENSORS_INVALID');
  assert.equal(thrownCode(() => parseSafetensors(rawFile({ a: t([-1], [0, 0]) }, 0))), 'SAFETENSORS_INVALID');
  // the error says what is wrong
  try {
    parseSafetensors(rawFile({ a: t([2, 2], [0, 12]) }, 12));
  } catch (err) {
    assert.match((err as Error).message, /tensor a has 12 bytes but shape \[2, 2\] of F32 needs 16/);
  }
});

test('unknown or unconvertible dtype is DTYPE_UNSUPPORTED when read, not when parsed', () => {
  const file = parseSafetensors(rawFile({ a: { dtype: 'I32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'Q4_K', shape: [3], data_offsets: [8, 11] } }, 11));
  assert.equal(thrownCode(() => tensorAsFloat32(file, 'a')), 'DTYPE_UNSUPPORTED');
  assert.equal(thrownCode(() => tensorAsFloat32(file, 'b')), 'DTYPE_UNSUPPORTED');
  assert.equal(thrownCode(() => tensorAsFloat32(file, 'missing')), 'MODEL_FILE_MISSING');
});
