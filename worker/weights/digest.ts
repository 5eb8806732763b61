/** SHA-256 through WebCrypto (pages and workers), as lower-case hex. */
export async function digestHex(bytes: Uint8Array): Promise<string> {
  const buf = await crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>);
  const out = new Uint8Array(buf);
  let hex = '';
  for (const b of out) hex += b.toString(16).padStart(2, '0');
  return hex;
}
