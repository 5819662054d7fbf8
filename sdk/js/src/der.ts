/**
 * ECDSA signature formats. JWS ES256 (RFC 7518 §3.4) wants the raw 64-byte `r || s`;
 * iOS (`SecKeyCreateSignature`) and Android Keystore (`Signature("SHA256withECDSA")`)
 * return an ASN.1 DER `SEQUENCE { INTEGER r, INTEGER s }`.
 *
 * @module
 */

import { KeyStoreError } from './errors.js';

/** The size of one P-256 scalar in bytes. */
const P256_SIZE = 32;

function readLength(der: Uint8Array, at: number): [length: number, next: number] {
  const first = der[at];
  if (first === undefined) throw new KeyStoreError('DER signature is truncated');
  if (first < 0x80) return [first, at + 1];
  if (first === 0x81) {
    const len = der[at + 1];
    if (len === undefined || len < 0x80) throw new KeyStoreError('DER signature has a bad length');
    return [len, at + 2];
  }
  throw new KeyStoreError('DER signature has a bad length');
}

function readInteger(der: Uint8Array, at: number, size: number): [value: Uint8Array, next: number] {
  if (der[at] !== 0x02) throw new KeyStoreError('DER signature: INTEGER expected');
  const [len, start] = readLength(der, at + 1);
  const end = start + len;
  if (len === 0 || end > der.length) throw new KeyStoreError('DER signature is truncated');
  let bytes = der.subarray(start, end);
  if ((bytes[0]! & 0x80) !== 0) throw new KeyStoreError('DER signature: negative INTEGER');
  // A leading zero is only allowed (and required) before a byte with its high bit set.
  if (bytes.length > 1 && bytes[0] === 0 && (bytes[1]! & 0x80) === 0) {
    throw new KeyStoreError('DER signature: INTEGER is not minimally encoded');
  }
  while (bytes.length > size && bytes[0] === 0) bytes = bytes.subarray(1);
  if (bytes.length > size) throw new KeyStoreError('DER signature: INTEGER too large');
  const out = new Uint8Array(size);
  out.set(bytes, size - bytes.length);
  return [out, end];
}

/**
 * Converts a DER-encoded ECDSA signature into raw `r || s` (64 bytes for P-256), as
 * ES256 JWS signatures are. Throws {@link KeyStoreError} on anything malformed.
 */
export function derToRaw(der: Uint8Array, size: number = P256_SIZE): Uint8Array {
  if (der[0] !== 0x30) throw new KeyStoreError('DER signature: SEQUENCE expected');
  const [len, start] = readLength(der, 1);
  if (start + len !== der.length) throw new KeyStoreError('DER signature has trailing or missing bytes');
  const [r, afterR] = readInteger(der, start, size);
  const [s, afterS] = readInteger(der, afterR, size);
  if (afterS !== der.length) throw new KeyStoreError('DER signature has trailing bytes');
  const raw = new Uint8Array(size * 2);
  raw.set(r, 0);
  raw.set(s, size);
  return raw;
}

/** Converts raw `r || s` into DER (the inverse of {@link derToRaw}). */
export function rawToDer(raw: Uint8Array): Uint8Array {
  if (raw.length === 0 || raw.length % 2 !== 0) throw new KeyStoreError('raw signature has an odd length');
  const half = raw.length / 2;
  const integer = (bytes: Uint8Array): number[] => {
    let i = 0;
    while (i < bytes.length - 1 && bytes[i] === 0) i++;
    const body = Array.from(bytes.subarray(i));
    if ((body[0]! & 0x80) !== 0) body.unshift(0);
    return [0x02, body.length, ...body];
  };
  const content = [...integer(raw.subarray(0, half)), ...integer(raw.subarray(half))];
  const head = content.length < 0x80 ? [0x30, content.length] : [0x30, 0x81, content.length];
  return Uint8Array.from([...head, ...content]);
}
