/**
 * `response_format` compiled to a tree of value nodes the JSON automaton walks. The supported JSON
 * Schema subset: `type` (object, array, string, number, integer, boolean, null, or a list of them),
 * `properties`, `required`, `additionalProperties` (false, true or a schema), `items` (one schema),
 * `enum`, `const`, `anyOf`, `minItems`/`maxItems`, `minLength`/`maxLength`, nested to any depth up to
 * MAX_DEPTH, plus annotations (title, description, default, examples, …). Anything else is refused
 * with RESPONSE_FORMAT_UNSUPPORTED before generation starts, as is a schema no value can satisfy.
 */
import { AppError, type ResponseFormat } from '../../../shared';

interface NodeBase {
  /** Unique within one compiled format (the automaton's cache keys use it). */
  id: number;
  /** Fewest characters a value of this node can take (minimal whitespace). */
  minLen: number;
}
export interface StringNode extends NodeBase {
  kind: 'string';
  minLength: number;
  maxLength: number | null;
}
export interface NumberNode extends NodeBase {
  kind: 'number';
  integer: boolean;
}
/** A fixed JSON text (const, enum members, true, false, null), as code points. */
export interface LiteralNode extends NodeBase {
  kind: 'literal';
  chars: readonly string[];
}
export interface ObjectNode extends NodeBase {
  kind: 'object';
  /** Property name → its value's node. */
  props: ReadonlyMap<string, SchemaNode>;
  /** Each property name as it appears between the quotes (JSON-escaped), and back. */
  encoded: ReadonlyMap<string, string>;
  byEncoded: ReadonlyMap<string, string>;
  required: readonly string[];
  /** Node of properties not listed, or null when none may appear. */
  additional: SchemaNode | null;
  /** Characters one required property takes: `"name":` plus its value's minimum. */
  entryCost: ReadonlyMap<string, number>;
}
export interface ArrayNode extends NodeBase {
  kind: 'array';
  items: SchemaNode;
  minItems: number;
  maxItems: number | null;
}
export interface AnyOfNode extends NodeBase {
  kind: 'anyOf';
  options: readonly SchemaNode[];
}
export type SchemaNode = StringNode | NumberNode | LiteralNode | ObjectNode | ArrayNode | AnyOfNode;

/** A response format ready for constrained decoding. */
export interface CompiledFormat {
  readonly type: 'json_object' | 'json_schema';
  readonly root: SchemaNode;
}

export const MAX_DEPTH = 32;
const TYPES = ['object', 'array', 'string', 'number', 'integer', 'boolean', 'null'] as const;
type JsonType = (typeof TYPES)[number];
const VALUE_KEYWORDS = new Set([
  'type', 'properties', 'required', 'additionalProperties', 'items', 'enum', 'const', 'anyOf',
  'minItems', 'maxItems', 'minLength', 'maxLength',
]);
const ANNOTATIONS = new Set(['title', 'description', '$schema', '$id', '$comment', 'default', 'examples', 'deprecated', 'readOnly', 'writeOnly']);

const refuse = (path: string, message: string, keyword?: string): AppError =>
  new AppError('RESPONSE_FORMAT_UNSUPPORTED', `response_format: ${message} (at ${path || '/'})`, keyword ? { path: path || '/', keyword } : { path: path || '/' });

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function jsonTypeOf(v: unknown): JsonType | 'unknown' {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  switch (typeof v) {
    case 'string':
      return 'string';
    case 'boolean':
      return 'boolean';
    case 'number':
      return Number.isInteger(v) ? 'integer' : 'number';
    case 'object':
      return 'object';
    default:
      return 'unknown';
  }
}

class Compiler {
  #nextId = 0;
  readonly any: AnyOfNode;
  readonly anyObject: ObjectNode;

  constructor() {
    // The "any JSON value" node refers to itself through objects and arrays: built by hand.
    const options: SchemaNode[] = [];
    this.any = { kind: 'anyOf', id: this.#id(), minLen: 1, options };
    this.anyObject = this.object(new Map(), [], this.any);
    const anyArray: ArrayNode = { kind: 'array', id: this.#id(), minLen: 2, items: this.any, minItems: 0, maxItems: null };
    options.push(
      this.anyObject,
      anyArray,
      this.string(0, null),
      this.number(false),
      this.literal(true),
      this.literal(false),
      this.literal(null),
    );
  }

  #id(): number {
    return this.#nextId++;
  }

  string(minLength: number, maxLength: number | null): StringNode {
    return { kind: 'string', id: this.#id(), minLen: 2 + minLength, minLength, maxLength };
  }

  number(integer: boolean): NumberNode {
    return { kind: 'number', id: this.#id(), minLen: 1, integer };
  }

  literal(value: unknown): LiteralNode {
    const chars = Array.from(JSON.stringify(value));
    return { kind: 'literal', id: this.#id(), minLen: chars.length, chars };
  }

  anyOf(options: SchemaNode[]): SchemaNode {
    if (options.length === 1) return options[0] as SchemaNode;
    return { kind: 'anyOf', id: this.#id(), minLen: Math.min(...options.map((o) => o.minLen)), options };
  }

  object(props: Map<string, SchemaNode>, required: string[], additional: SchemaNode | null): ObjectNode {
    const encoded = new Map<string, string>();
    const byEncoded = new Map<string, string>();
    for (const name of props.keys()) {
      const enc = JSON.stringify(name).slice(1, -1);
      encoded.set(name, enc);
      byEncoded.set(enc, name);
    }
    const entryCost = new Map<string, number>();
    for (const name of required) entryCost.set(name, Array.from(encoded.get(name) ?? name).length + 3 + (props.get(name) as SchemaNode).minLen);
    const sum = [...entryCost.values()].reduce((a, b) => a + b, 0);
    const minLen = 2 + sum + Math.max(0, required.length - 1);
    return { kind: 'object', id: this.#id(), minLen, props, encoded, byEncoded, required, additional, entryCost };
  }

  compile(schema: unknown, path: string, depth: number): SchemaNode {
    if (depth > MAX_DEPTH) throw refuse(path, `the schema nests deeper than ${MAX_DEPTH} levels`);
    if (schema === true) return this.any;
    if (!isRecord(schema)) throw refuse(path, 'a schema must be an object (or true)');
    for (const key of Object.keys(schema)) {
      if (!VALUE_KEYWORDS.has(key) && !ANNOTATIONS.has(key)) throw refuse(path, `the keyword "${key}" is not supported`, key);
    }
    let types: JsonType[] | null = null;
    if (schema.type !== undefined) {
      const raw = Array.isArray(schema.type) ? schema.type : [schema.type];
      if (raw.length === 0) throw refuse(path, 'type is an empty list', 'type');
      for (const t of raw) if (!(TYPES as readonly unknown[]).includes(t)) throw refuse(path, `type ${JSON.stringify(t)} is not supported`, 'type');
      types = [...new Set(raw as JsonType[])];
    }

    if (schema.anyOf !== undefined) {
      const others = Object.keys(schema).filter((k) => VALUE_KEYWORDS.has(k) && k !== 'anyOf');
      if (others.length) throw refuse(path, `anyOf beside other keywords (${others.join(', ')}) is not supported; move them into each branch`, 'anyOf');
      if (!Array.isArray(schema.anyOf) || schema.anyOf.length === 0) throw refuse(path, 'anyOf must be a non-empty list', 'anyOf');
      return this.anyOf(schema.anyOf.map((s, i) => this.compile(s, `${path}/anyOf/${i}`, depth + 1)));
    }

    if (schema.const !== undefined || schema.enum !== undefined) {
      let values: unknown[];
      if (schema.const !== undefined) values = [schema.const];
      else if (Array.isArray(schema.enum) && schema.enum.length > 0) values = schema.enum;
      else throw refuse(path, 'enum must be a non-empty list', 'enum');
      const fits = (v: unknown): boolean => {
        const t = jsonTypeOf(v);
        if (t === 'unknown') return false;
        return types === null || types.includes(t) || (t === 'integer' && types.includes('number'));
      };
      const kept = values.filter(fits);
      if (kept.length === 0) throw refuse(path, 'no enum/const value has the schema\'s type', schema.const !== undefined ? 'const' : 'enum');
      return this.anyOf(kept.map((v) => this.literal(v)));
    }

    const inferred: JsonType[] =
      types ??
      (['properties', 'required', 'additionalProperties'].some((k) => k in schema)
        ? ['object']
        : ['items', 'minItems', 'maxItems'].some((k) => k in schema)
          ? ['array']
          : ['minLength', 'maxLength'].some((k) => k in schema)
            ? ['string']
            : []);
    if (inferred.length === 0) return this.any;
    return this.anyOf(inferred.map((t) => this.#typed(t, schema, path, depth)));
  }

  #count(schema: Record<string, unknown>, key: string, path: string): number | null {
    const v = schema[key];
    if (v === undefined) return null;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw refuse(path, `${key} must be a non-negative integer`, key);
    return v;
  }

  #typed(type: JsonType, schema: Record<string, unknown>, path: string, depth: number): SchemaNode {
    switch (type) {
      case 'null':
        return this.literal(null);
      case 'boolean':
        return this.anyOf([this.literal(true), this.literal(false)]);
      case 'number':
      case 'integer':
        return this.number(type === 'integer');
      case 'string': {
        const min = this.#count(schema, 'minLength', path) ?? 0;
        const max = this.#count(schema, 'maxLength', path);
        if (max !== null && max < min) throw refuse(path, 'maxLength is below minLength', 'maxLength');
        return this.string(min, max);
      }
      case 'array': {
        const min = this.#count(schema, 'minItems', path) ?? 0;
        const max = this.#count(schema, 'maxItems', path);
        if (max !== null && max < min) throw refuse(path, 'maxItems is below minItems', 'maxItems');
        if (Array.isArray(schema.items)) throw refuse(path, 'items as a list (tuples) is not supported', 'items');
        const items = schema.items === undefined ? this.any : this.compile(schema.items, `${path}/items`, depth + 1);
        const minLen = min === 0 ? 2 : 2 + min * items.minLen + (min - 1);
        return { kind: 'array', id: this.#id(), minLen, items, minItems: min, maxItems: max };
      }
      case 'object': {
        const props = new Map<string, SchemaNode>();
        if (schema.properties !== undefined) {
          if (!isRecord(schema.properties)) throw refuse(path, 'properties must be an object', 'properties');
          for (const [name, sub] of Object.entries(schema.properties)) props.set(name, this.compile(sub, `${path}/properties/${name}`, depth + 1));
        }
        let additional: SchemaNode | null;
        const ap = schema.additionalProperties;
        if (ap === undefined || ap === true) additional = this.any;
        else if (ap === false) additional = null;
        else additional = this.compile(ap, `${path}/additionalProperties`, depth + 1);
        const required: string[] = [];
        if (schema.required !== undefined) {
          if (!Array.isArray(schema.required) || schema.required.some((r) => typeof r !== 'string')) throw refuse(path, 'required must be a list of names', 'required');
          for (const name of new Set(schema.required as string[])) {
            if (!props.has(name)) {
              if (additional === null) throw refuse(path, `"${name}" is required but additionalProperties is false and it is not in properties`, 'required');
              props.set(name, additional);
            }
            required.push(name);
          }
        }
        return this.object(props, required, additional);
      }
    }
  }
}

/**
 * Checks and compiles a response format; null for plain text. Throws RESPONSE_FORMAT_UNSUPPORTED
 * (with `details.path` and `details.keyword`) for schema features outside the subset, so a caller
 * can refuse the request before it is queued.
 */
export function compileResponseFormat(rf: ResponseFormat | undefined | null): CompiledFormat | null {
  if (!rf || rf.type === 'text') return null;
  const c = new Compiler();
  if (rf.type === 'json_object') return { type: 'json_object', root: c.anyObject };
  return { type: 'json_schema', root: c.compile(rf.schema, '', 0) };
}
