/**
 * The vocabulary as the constraint sees it: each token's text, and a trie over those texts so one
 * walk with the automaton visits each shared prefix once (a 32k–150k vocabulary costs a walk over
 * the prefixes the grammar allows, not a full scan per token). Tokens with no text of their own —
 * special tokens, empty ones, and byte fragments of a multi-byte character (which decode to U+FFFD
 * alone) — are left out: under a constraint they are never chosen.
 */
export interface TrieNode {
  readonly children: Map<string, TrieNode>;
  /** Tokens whose text ends here. */
  readonly ids: number[];
}

export interface ConstraintVocabulary {
  readonly size: number;
  /** Token id → its text, or null when the constraint never picks it. */
  readonly texts: readonly (string | null)[];
  readonly trie: TrieNode;
}

export function buildVocabulary(size: number, tokenText: (id: number) => string | null): ConstraintVocabulary {
  const texts: (string | null)[] = [];
  const trie: TrieNode = { children: new Map(), ids: [] };
  for (let id = 0; id < size; id++) {
    const text = tokenText(id);
    const usable = text !== null && text.length > 0 && !text.includes('\uFFFD') ? text : null;
    texts.push(usable);
    if (usable === null) continue;
    let node = trie;
    for (const ch of usable) {
      let child = node.children.get(ch);
      if (!child) {
        child = { children: new Map(), ids: [] };
        node.children.set(ch, child);
      }
      node = child;
    }
    node.ids.push(id);
  }
  return { size, texts, trie };
}

/** The vocabulary from a tokenizer's decode of each id alone, special ids excluded. */
export function vocabularyFromDecode(size: number, decode: (ids: readonly number[]) => string, specialIds: ReadonlySet<number>): ConstraintVocabulary {
  return buildVocabulary(size, (id) => (specialIds.has(id) ? null : decode([id])));
}
