//! json-transform: applies a list of operations to an array of objects.
//!
//! stdin:  {"data": <any JSON>, "ops": [op, ...]}
//! stdout: {"result": <data after every op>}
//!
//! Ops (applied in order; all but `sum` need `data` to be an array of objects):
//!   {"op":"pick","keys":["a","b"]}        keep only these keys, in this order
//!   {"op":"rename","from":"a","to":"b"}    rename a key, keeping its place
//!   {"op":"sort","by":"a","desc":false}    stable sort; numbers < strings < other;
//!                                          objects without the key go last
//!   {"op":"filter","key":"a","eq":<JSON>}  keep objects whose key equals the value
//!   {"op":"limit","n":10}                  keep the first n
//!   {"op":"sum","key":"a"}                 the sum of the numeric values at key (a number)
//!
//! Bad input: a message on stderr and exit code 2. Only std: no crates.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::process::exit;

#[derive(Clone, Debug, PartialEq)]
enum Value {
    Null,
    Bool(bool),
    Number(f64),
    Str(String),
    Array(Vec<Value>),
    /// Keys keep their input order (like JSON.parse); a repeated key keeps its
    /// first place and its last value.
    Object(Vec<(String, Value)>),
}

const MAX_DEPTH: usize = 256;

// ------------------------------------------------------------------- parser

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
}

type Res<T> = Result<T, String>;

impl<'a> Parser<'a> {
    fn err<T>(&self, what: &str) -> Res<T> {
        Err(format!("invalid JSON at byte {}: {}", self.i, what))
    }

    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Res<()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            self.err(&format!("expected '{}'", c as char))
        }
    }

    fn value(&mut self) -> Res<Value> {
        self.ws();
        match self.peek() {
            None => self.err("unexpected end"),
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => Ok(Value::Str(self.string()?)),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            Some(_) => self.number(),
        }
    }

    fn literal(&mut self, word: &str, v: Value) -> Res<Value> {
        if self.s[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(v)
        } else {
            self.err("unknown literal")
        }
    }

    fn enter(&mut self) -> Res<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err("nested too deeply");
        }
        self.i += 1;
        self.ws();
        Ok(())
    }

    fn object(&mut self) -> Res<Value> {
        self.enter()?;
        let mut fields: Vec<(String, Value)> = Vec::new();
        if self.peek() == Some(b'}') {
            self.i += 1;
            self.depth -= 1;
            return Ok(Value::Object(fields));
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return self.err("expected a string key");
            }
            let key = self.string()?;
            self.ws();
            self.eat(b':')?;
            let v = self.value()?;
            match fields.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = v,
                None => fields.push((key, v)),
            }
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    self.depth -= 1;
                    return Ok(Value::Object(fields));
                }
                _ => return self.err("expected ',' or '}'"),
            }
        }
    }

    fn array(&mut self) -> Res<Value> {
        self.enter()?;
        let mut items = Vec::new();
        if self.peek() == Some(b']') {
            self.i += 1;
            self.depth -= 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value()?);
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    self.depth -= 1;
                    return Ok(Value::Array(items));
                }
                _ => return self.err("expected ',' or ']'"),
            }
        }
    }

    fn hex4(&mut self) -> Res<u32> {
        if self.i + 4 > self.s.len() {
            return self.err("short \\u escape");
        }
        let mut v = 0u32;
        for k in 0..4 {
            let d = match (self.s[self.i + k] as char).to_digit(16) {
                Some(d) => d,
                None => return self.err("bad \\u escape"),
            };
            v = v * 16 + d;
        }
        self.i += 4;
        Ok(v)
    }

    fn string(&mut self) -> Res<String> {
        self.i += 1; // opening quote
        let mut out: Vec<u8> = Vec::new();
        loop {
            let c = match self.peek() {
                Some(c) => c,
                None => return self.err("unterminated string"),
            };
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let e = match self.peek() {
                        Some(e) => e,
                        None => return self.err("unterminated escape"),
                    };
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => return self.err("bad escape"),
                    };
                    let mut tmp = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
                }
                0..=0x1f => return self.err("control character in string"),
                _ => out.push(c),
            }
        }
        match String::from_utf8(out) {
            Ok(s) => Ok(s),
            Err(_) => self.err("string is not UTF-8"),
        }
    }

    /// After `\u`: one code point; a pair of surrogates joins, a lone one is U+FFFD.
    fn unicode_escape(&mut self) -> Res<char> {
        let hi = self.hex4()?;
        if (0xD800..0xDC00).contains(&hi) && self.s[self.i..].starts_with(b"\\u") {
            let save = self.i;
            self.i += 2;
            let lo = self.hex4()?;
            if (0xDC00..0xE000).contains(&lo) {
                return Ok(char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)).unwrap_or('\u{FFFD}'));
            }
            self.i = save;
        }
        Ok(char::from_u32(hi).unwrap_or('\u{FFFD}'))
    }

    fn number(&mut self) -> Res<Value> {
        let start = self.i;
        let digits = |p: &mut Parser| {
            let s = p.i;
            while p.peek().map_or(false, |c| c.is_ascii_digit()) {
                p.i += 1;
            }
            p.i - s
        };
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        if self.peek() == Some(b'0') {
            self.i += 1;
        } else if digits(self) == 0 {
            return self.err("expected a value");
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if digits(self) == 0 {
                return self.err("expected digits after '.'");
            }
        }
        if matches!(self.peek(), Some(b'e') | Some(b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+') | Some(b'-')) {
                self.i += 1;
            }
            if digits(self) == 0 {
                return self.err("expected exponent digits");
            }
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
        match text.parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(Value::Number(n)),
            _ => self.err("number out of range"),
        }
    }
}

fn parse(s: &[u8]) -> Res<Value> {
    let mut p = Parser { s, i: 0, depth: 0 };
    let v = p.value()?;
    p.ws();
    if p.i != s.len() {
        return p.err("trailing bytes after the value");
    }
    Ok(v)
}

// --------------------------------------------------------------- serialiser

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_number(out: &mut String, n: f64) {
    if n == 0.0 {
        out.push('0'); // also -0, as JSON.stringify does
    } else {
        // Display is the shortest form that reads back to the same f64, with no
        // exponent ("3" for 3.0, "0.0000001" for 1e-7): always valid JSON.
        let _ = write!(out, "{}", n);
    }
}

fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(out, *n),
        Value::Str(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (k, item) in items.iter().enumerate() {
                if k > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(fields) => {
            out.push('{');
            for (k, (key, item)) in fields.iter().enumerate() {
                if k > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

// ---------------------------------------------------------------------- ops

fn get<'v>(obj: &'v [(String, Value)], key: &str) -> Option<&'v Value> {
    obj.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn str_field(op: &[(String, Value)], name: &str, which: usize) -> Res<String> {
    match get(op, name) {
        Some(Value::Str(s)) => Ok(s.clone()),
        _ => Err(format!("ops[{}]: \"{}\" must be a string", which, name)),
    }
}

/// The array of objects an op works on, or an error naming the op.
fn rows(data: Value, which: usize, name: &str) -> Res<Vec<Vec<(String, Value)>>> {
    let items = match data {
        Value::Array(items) => items,
        _ => return Err(format!("ops[{}] ({}): data must be an array of objects", which, name)),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(k, item)| match item {
            Value::Object(fields) => Ok(fields),
            _ => Err(format!("ops[{}] ({}): data[{}] is not an object", which, name, k)),
        })
        .collect()
}

fn to_data(rows: Vec<Vec<(String, Value)>>) -> Value {
    Value::Array(rows.into_iter().map(Value::Object).collect())
}

/// Sort rank: numbers, then strings, then booleans, null, arrays and objects; missing last.
fn rank(v: Option<&Value>) -> u8 {
    match v {
        Some(Value::Number(_)) => 0,
        Some(Value::Str(_)) => 1,
        Some(Value::Bool(_)) => 2,
        Some(Value::Null) => 3,
        Some(Value::Array(_)) => 4,
        Some(Value::Object(_)) => 5,
        None => 6,
    }
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
        // Strings by code point, like comparing Unicode scalar values.
        (Some(Value::Str(x)), Some(Value::Str(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

fn apply(data: Value, op: &Value, which: usize) -> Res<Value> {
    let op = match op {
        Value::Object(fields) => fields,
        _ => return Err(format!("ops[{}] must be an object like {{\"op\":\"pick\",...}}", which)),
    };
    let name = str_field(op, "op", which)?;
    match name.as_str() {
        "pick" => {
            let keys: Vec<String> = match get(op, "keys") {
                Some(Value::Array(ks)) => ks
                    .iter()
                    .map(|k| match k {
                        Value::Str(s) => Ok(s.clone()),
                        _ => Err(format!("ops[{}] (pick): keys must be strings", which)),
                    })
                    .collect::<Res<_>>()?,
                _ => return Err(format!("ops[{}] (pick): \"keys\" must be an array of strings", which)),
            };
            let picked = rows(data, which, "pick")?
                .into_iter()
                .map(|mut row| {
                    let mut kept = Vec::new();
                    for k in &keys {
                        if let Some(pos) = row.iter().position(|(rk, _)| rk == k) {
                            kept.push(row.swap_remove(pos));
                        }
                    }
                    kept
                })
                .collect();
            Ok(to_data(picked))
        }
        "rename" => {
            let from = str_field(op, "from", which)?;
            let to = str_field(op, "to", which)?;
            let renamed = rows(data, which, "rename")?
                .into_iter()
                .map(|mut row| {
                    if from != to && row.iter().any(|(k, _)| *k == from) {
                        row.retain(|(k, _)| *k != to);
                        for field in row.iter_mut() {
                            if field.0 == from {
                                field.0 = to.clone();
                            }
                        }
                    }
                    row
                })
                .collect();
            Ok(to_data(renamed))
        }
        "sort" => {
            let by = str_field(op, "by", which)?;
            let desc = match get(op, "desc") {
                None | Some(Value::Bool(false)) => false,
                Some(Value::Bool(true)) => true,
                _ => return Err(format!("ops[{}] (sort): \"desc\" must be a boolean", which)),
            };
            let mut sorted = rows(data, which, "sort")?;
            sorted.sort_by(|a, b| {
                let (x, y) = (get(a, &by), get(b, &by));
                // Missing keys stay last in both directions.
                match (x.is_none(), y.is_none()) {
                    (false, false) if desc => compare(y, x),
                    _ => compare(x, y),
                }
            });
            Ok(to_data(sorted))
        }
        "filter" => {
            let key = str_field(op, "key", which)?;
            let eq = match get(op, "eq") {
                Some(v) => v.clone(),
                None => return Err(format!("ops[{}] (filter): \"eq\" is required", which)),
            };
            let kept = rows(data, which, "filter")?
                .into_iter()
                .filter(|row| get(row, &key) == Some(&eq))
                .collect();
            Ok(to_data(kept))
        }
        "limit" => {
            let n = match get(op, "n") {
                Some(Value::Number(n)) if *n >= 0.0 && n.fract() == 0.0 => *n as usize,
                _ => return Err(format!("ops[{}] (limit): \"n\" must be a whole number >= 0", which)),
            };
            let mut kept = rows(data, which, "limit")?;
            kept.truncate(n);
            Ok(to_data(kept))
        }
        "sum" => {
            let key = str_field(op, "key", which)?;
            let total: f64 = rows(data, which, "sum")?
                .iter()
                .filter_map(|row| match get(row, &key) {
                    Some(Value::Number(n)) => Some(*n),
                    _ => None,
                })
                .sum();
            if !total.is_finite() {
                return Err(format!("ops[{}] (sum): the sum overflows", which));
            }
            Ok(Value::Number(total))
        }
        other => Err(format!(
            "ops[{}]: unknown op {:?}; use pick, rename, sort, filter, limit or sum",
            which, other
        )),
    }
}

fn run(input: &[u8]) -> Res<String> {
    let root = match parse(input)? {
        Value::Object(fields) => fields,
        _ => return Err("stdin must be a JSON object like {\"data\": [...], \"ops\": [...]}".into()),
    };
    let mut data = get(&root, "data").cloned().unwrap_or(Value::Null);
    let ops = match get(&root, "ops") {
        None => Vec::new(),
        Some(Value::Array(ops)) => ops.clone(),
        Some(_) => return Err("\"ops\" must be an array".into()),
    };
    for (k, op) in ops.iter().enumerate() {
        data = apply(data, op, k)?;
    }
    let mut out = String::from("{\"result\":");
    write_value(&mut out, &data);
    out.push_str("}\n");
    Ok(out)
}

fn main() {
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("json-transform: cannot read stdin: {}", e);
        exit(2);
    }
    match run(&input) {
        Ok(out) => {
            let mut stdout = std::io::stdout();
            if stdout.write_all(out.as_bytes()).and_then(|_| stdout.flush()).is_err() {
                exit(1);
            }
            eprintln!("json-transform: {} bytes in, {} bytes out", input.len(), out.len());
        }
        Err(msg) => {
            eprintln!("json-transform: {}", msg);
            exit(2);
        }
    }
}
