//! A fast reader for the block-style YAML that `kubectl get -o yaml` prints: block mappings and
//! sequences, plain and single-line quoted scalars, literal block scalars (`|`), comments,
//! `---` separators, `{}` and `[]`.
//!
//! Anything else (flow collections with content, anchors, aliases, tags, folded or multi-line
//! scalars, directives, odd indentation) makes it give up with [`Unsupported`], and the caller
//! reads the text with the full YAML parser instead, which also reports errors. It never
//! recurses deeper than the text's indentation allows, and refuses more than [`MAX_DEPTH`]
//! levels.

use std::borrow::Cow;

/// Deeper nesting is left to the full parser (which refuses it too).
pub(crate) const MAX_DEPTH: usize = 64;

/// The text uses YAML this reader does not handle; use the full parser.
#[derive(Debug)]
pub(crate) struct Unsupported;

type R<T> = Result<T, Unsupported>;

/// A YAML node.
#[derive(Debug, PartialEq)]
pub(crate) enum Yaml<'a> {
    /// `null`, `~` or nothing.
    Null,
    /// A scalar; `plain` when unquoted (and so possibly a number or boolean).
    Str { text: Cow<'a, str>, plain: bool },
    /// A sequence.
    Seq(Vec<Yaml<'a>>),
    /// A mapping, in source order.
    Map(Vec<(Cow<'a, str>, Yaml<'a>)>),
}

/// What part of a Kubernetes object a node is, so that only what Kilo reads is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// An object (or a `List`): `apiVersion`, `kind`, `metadata`, `spec` and `items` are kept.
    Object,
    /// `metadata`: `name`, `labels` and `annotations` are kept.
    Metadata,
    /// Everything is kept.
    All,
}

impl Part {
    /// The part of the value of `key` in this part, or `None` when it is skipped.
    fn child(self, key: &str) -> Option<Part> {
        match (self, key) {
            (Part::All, _) => Some(Part::All),
            (Part::Object, "apiVersion" | "kind" | "spec") => Some(Part::All),
            (Part::Object, "metadata") => Some(Part::Metadata),
            (Part::Object, "items") => Some(Part::Object),
            (Part::Metadata, "name" | "labels" | "annotations") => Some(Part::All),
            _ => None,
        }
    }
}

/// Parses every document of `text`, building only the parts of each object that Kilo reads
/// (`part` [`Part::Object`]) or everything ([`Part::All`]).
pub(crate) fn parse(text: &str, part: Part) -> R<Vec<Yaml<'_>>> {
    let mut p = Parser { lines: text.lines().collect(), i: 0, virt: None, depth: 0 };
    let mut docs = Vec::new();
    while let Some((indent, t)) = p.peek()? {
        if t == "---" {
            p.advance();
            continue;
        }
        if indent != 0 || t.starts_with("---") || t.starts_with("...") || t.starts_with('%') {
            return Err(Unsupported);
        }
        docs.push(p.block(part)?);
        if let Some((_, t)) = p.peek()?
            && t != "---"
        {
            return Err(Unsupported);
        }
    }
    Ok(docs)
}

struct Parser<'a> {
    lines: Vec<&'a str>,
    i: usize,
    /// The rest of line `i` after a `- `, read as a line of its own at a deeper column.
    virt: Option<(usize, &'a str)>,
    depth: usize,
}

fn is_item(t: &str) -> bool {
    t == "-" || t.starts_with("- ")
}

/// A document marker (`---` or `...`) at the start of a line ends every block.
fn is_marker(indent: usize, t: &str) -> bool {
    indent == 0 && (t.starts_with("---") || t.starts_with("..."))
}

impl<'a> Parser<'a> {
    /// The current significant line: its indentation and its trimmed text.
    fn peek(&mut self) -> R<Option<(usize, &'a str)>> {
        if let Some(v) = self.virt {
            return Ok(Some(v));
        }
        while let Some(&raw) = self.lines.get(self.i) {
            let content = raw.trim_start_matches(' ');
            if content.starts_with('\t') {
                return Err(Unsupported);
            }
            let t = content.trim_end();
            if t.is_empty() || t.starts_with('#') {
                self.i += 1;
                continue;
            }
            return Ok(Some((raw.len() - content.len(), t)));
        }
        Ok(None)
    }

    fn advance(&mut self) {
        self.virt = None;
        self.i += 1;
    }

    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> R<T>) -> R<T> {
        if self.depth >= MAX_DEPTH {
            return Err(Unsupported);
        }
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }

    /// A block node starting at the current line.
    fn block(&mut self, part: Part) -> R<Yaml<'a>> {
        let (indent, t) = self.peek()?.ok_or(Unsupported)?;
        self.nested(|p| if is_item(t) { p.seq(indent, part) } else { p.map(indent, part) })
    }

    /// Skips the value of a key at `indent` whose line was consumed: every line indented
    /// more, and a sequence at the key's own indentation.
    fn skip(&mut self, indent: usize) -> R<()> {
        while let Some((ind, t)) = self.peek()? {
            if is_marker(ind, t) || ind < indent || (ind == indent && !is_item(t)) {
                break;
            }
            self.advance();
        }
        Ok(())
    }

    fn seq(&mut self, indent: usize, part: Part) -> R<Yaml<'a>> {
        let mut items = Vec::new();
        while let Some((ind, t)) = self.peek()? {
            if ind < indent || (ind == indent && !is_item(t)) || is_marker(ind, t) {
                break;
            }
            if ind > indent {
                return Err(Unsupported);
            }
            let rest = t[1..].trim_start();
            if rest.is_empty() {
                self.advance();
                items.push(match self.peek()? {
                    Some((next, _)) if next > indent => self.block(part)?,
                    _ => Yaml::Null,
                });
            } else if is_item(rest) || split_key(rest)?.is_some() {
                self.virt = Some((indent + (t.len() - rest.len()), rest));
                items.push(self.block(part)?);
            } else {
                self.advance();
                items.push(self.scalar(rest, indent)?);
            }
        }
        Ok(Yaml::Seq(items))
    }

    fn map(&mut self, indent: usize, part: Part) -> R<Yaml<'a>> {
        let mut entries = Vec::new();
        while let Some((ind, t)) = self.peek()? {
            if ind < indent || is_marker(ind, t) {
                break;
            }
            if ind > indent || is_item(t) {
                return Err(Unsupported);
            }
            let (key, rest) = split_key(t)?.ok_or(Unsupported)?;
            self.advance();
            let Some(part) = part.child(&key) else {
                self.skip(indent)?;
                continue;
            };
            let value = if rest.is_empty() {
                match self.peek()? {
                    Some((next, _)) if next > indent => self.block(part)?,
                    Some((next, t)) if next == indent && is_item(t) => {
                        self.nested(|p| p.seq(indent, part))?
                    }
                    _ => Yaml::Null,
                }
            } else {
                self.scalar(rest, indent)?
            };
            entries.push((key, value));
        }
        Ok(Yaml::Map(entries))
    }

    /// A value on the rest of a line (the line is already consumed); `indent` is its parent's.
    fn scalar(&mut self, rest: &'a str, indent: usize) -> R<Yaml<'a>> {
        match rest.as_bytes()[0] {
            b'"' | b'\'' => {
                let (text, after) = quoted(rest)?;
                let after = after.trim_start();
                if !(after.is_empty() || after.starts_with('#')) {
                    return Err(Unsupported);
                }
                Ok(Yaml::Str { text, plain: false })
            }
            b'|' => self.literal(rest, indent),
            b'{' | b'[' => match strip_comment(rest) {
                "{}" => Ok(Yaml::Map(Vec::new())),
                "[]" => Ok(Yaml::Seq(Vec::new())),
                _ => Err(Unsupported),
            },
            b'>' | b'&' | b'*' | b'!' | b'%' | b'@' | b'`' | b'?' | b',' | b']' | b'}' | b'#' => {
                Err(Unsupported)
            }
            _ => {
                let text = strip_comment(rest);
                if text.contains(": ") || text.ends_with(':') || text.contains(" #") {
                    return Err(Unsupported);
                }
                Ok(match text {
                    "" | "~" | "null" | "Null" | "NULL" => Yaml::Null,
                    _ if resolves_differently(text) => return Err(Unsupported),
                    _ => Yaml::Str { text: Cow::Borrowed(text), plain: true },
                })
            }
        }
    }

    /// A literal block scalar (`|`, `|-`, `|+`); its lines follow the current position.
    fn literal(&mut self, header: &str, indent: usize) -> R<Yaml<'a>> {
        let chomp = match strip_comment(header) {
            "|" => Chomp::Clip,
            "|-" => Chomp::Strip,
            "|+" => Chomp::Keep,
            _ => return Err(Unsupported),
        };
        let mut content_indent = None;
        let mut lines: Vec<&str> = Vec::new();
        while let Some(&raw) = self.lines.get(self.i) {
            let spaces = raw.len() - raw.trim_start_matches(' ').len();
            if raw.trim().is_empty() {
                lines.push("");
                self.i += 1;
                continue;
            }
            let ci = *content_indent.get_or_insert(spaces);
            if ci <= indent || spaces < ci {
                break;
            }
            lines.push(&raw[ci..]);
            self.i += 1;
        }
        let trailing = lines.iter().rev().take_while(|l| l.is_empty()).count();
        let body = &lines[..lines.len() - trailing];
        let mut text = body.join("\n");
        match chomp {
            Chomp::Strip => {}
            Chomp::Clip if !body.is_empty() => text.push('\n'),
            Chomp::Clip => {}
            Chomp::Keep => {
                if !body.is_empty() {
                    text.push('\n');
                }
                text.push_str(&"\n".repeat(trailing));
            }
        }
        Ok(Yaml::Str { text: Cow::Owned(text), plain: false })
    }
}

/// Whether a plain scalar may be a number or boolean that the full parser reads differently
/// from its text (`0x1F`, `1.50`, `007`, `.inf`, `True`); canonical decimal integers are not.
fn resolves_differently(t: &str) -> bool {
    if is_canonical_int(t) {
        return false;
    }
    let unsigned = t.trim_start_matches(['+', '-']);
    matches!(t, "True" | "TRUE" | "False" | "FALSE")
        || t.parse::<f64>().is_ok()
        || matches!(unsigned, ".inf" | ".Inf" | ".INF" | ".nan" | ".NaN" | ".NAN")
        || [("0x", 16), ("0o", 8), ("0b", 2)].iter().any(|(prefix, radix)| {
            unsigned.strip_prefix(prefix).is_some_and(|digits| {
                !digits.is_empty() && digits.chars().all(|c| c == '_' || c.is_digit(*radix))
            })
        })
        || (unsigned.starts_with(|c: char| c.is_ascii_digit())
            && unsigned.bytes().all(|b| b.is_ascii_digit() || b == b'_'))
}

/// `0`, or an optional `-` and digits without a leading zero.
fn is_canonical_int(t: &str) -> bool {
    let digits = t.strip_prefix('-').unwrap_or(t);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && t.parse::<i64>().is_ok()
}

enum Chomp {
    Clip,
    Strip,
    Keep,
}

/// Removes a trailing ` # comment` from plain text.
fn strip_comment(s: &str) -> &str {
    match s.find(" #") {
        Some(i) => s[..i].trim_end(),
        None => s,
    }
}

/// `key: rest` or `key:` → the key and the rest; `None` when the line is not a key.
fn split_key(t: &str) -> R<Option<(Cow<'_, str>, &str)>> {
    let (key, after) = if t.starts_with('"') || t.starts_with('\'') {
        let (key, after) = quoted(t)?;
        (key, after)
    } else {
        let end = match t.find(": ") {
            Some(i) => i,
            None if t.ends_with(':') => t.len() - 1,
            None => return Ok(None),
        };
        let key = &t[..end];
        if key.is_empty()
            || key.contains(" #")
            || matches!(key.as_bytes()[0], b'?' | b'&' | b'*' | b'!' | b'[' | b'{' | b'|' | b'>')
        {
            return Err(Unsupported);
        }
        (Cow::Borrowed(key), &t[end..])
    };
    match after.strip_prefix(':') {
        Some(rest) if rest.is_empty() || rest.starts_with(' ') => {
            Ok(Some((key, rest.trim_start())))
        }
        _ if t.starts_with('"') || t.starts_with('\'') => Ok(None),
        _ => Err(Unsupported),
    }
}

/// A single-line quoted scalar at the start of `s`, and what follows it.
fn quoted(s: &str) -> R<(Cow<'_, str>, &str)> {
    let q = s.as_bytes()[0];
    if q == b'\'' {
        let mut out = String::new();
        let mut rest = &s[1..];
        loop {
            let i = rest.find('\'').ok_or(Unsupported)?;
            out.push_str(&rest[..i]);
            if rest[i + 1..].starts_with('\'') {
                out.push('\'');
                rest = &rest[i + 2..];
            } else {
                return Ok((Cow::Owned(out), &rest[i + 1..]));
            }
        }
    }
    let body = &s[1..];
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                let text = if out.is_empty() && !body[..i].contains('\\') {
                    Cow::Borrowed(&body[..i])
                } else {
                    Cow::Owned(out)
                };
                return Ok((text, &body[i + 1..]));
            }
            '\\' => {
                let (_, e) = chars.next().ok_or(Unsupported)?;
                let hex = |chars: &mut std::str::CharIndices<'_>, n: usize| -> R<char> {
                    let digits: String = chars.by_ref().take(n).map(|(_, c)| c).collect();
                    let v = u32::from_str_radix(&digits, 16).map_err(|_| Unsupported)?;
                    if digits.len() != n {
                        return Err(Unsupported);
                    }
                    char::from_u32(v).ok_or(Unsupported)
                };
                out.push(match e {
                    '\\' => '\\',
                    '"' => '"',
                    '/' => '/',
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    '0' => '\0',
                    ' ' => ' ',
                    'x' => hex(&mut chars, 2)?,
                    'u' => hex(&mut chars, 4)?,
                    'U' => hex(&mut chars, 8)?,
                    _ => return Err(Unsupported),
                });
            }
            c => out.push(c),
        }
    }
    Err(Unsupported)
}

impl Yaml<'_> {
    /// The value as JSON, scalars typed as YAML 1.2's core schema types them.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Yaml::Null => Value::Null,
            Yaml::Str { text, plain: false } => Value::String(text.to_string()),
            Yaml::Str { text, plain: true } => match text.as_ref() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                t => match t.parse::<i64>() {
                    Ok(n) if is_canonical_int(t) => Value::from(n),
                    _ => Value::String(t.to_string()),
                },
            },
            Yaml::Seq(items) => Value::Array(items.iter().map(Yaml::to_json).collect()),
            Yaml::Map(entries) => {
                Value::Object(entries.iter().map(|(k, v)| (k.to_string(), v.to_json())).collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Yaml<'_> {
        Yaml::Str { text: Cow::Borrowed(text), plain: true }
    }

    #[test]
    fn kubectl_style_block_yaml_parses() {
        let text = "apiVersion: v1\nitems:\n- kind: Node\n  metadata:\n    annotations:\n      \
                    a: \"x\\ty\"\n      b: 'it''s'\n    name: n # comment\n  spec:\n    podCIDRs:\n    \
                    - 10.0.0.0/24\n    taints: []\n- kind: Peer\nkind: List\n";
        let docs = parse(text, Part::All).unwrap();
        let want = Yaml::Map(vec![
            ("apiVersion".into(), s("v1")),
            (
                "items".into(),
                Yaml::Seq(vec![
                    Yaml::Map(vec![
                        ("kind".into(), s("Node")),
                        (
                            "metadata".into(),
                            Yaml::Map(vec![
                                (
                                    "annotations".into(),
                                    Yaml::Map(vec![
                                        (
                                            "a".into(),
                                            Yaml::Str { text: "x\ty".into(), plain: false },
                                        ),
                                        (
                                            "b".into(),
                                            Yaml::Str { text: "it's".into(), plain: false },
                                        ),
                                    ]),
                                ),
                                ("name".into(), s("n")),
                            ]),
                        ),
                        (
                            "spec".into(),
                            Yaml::Map(vec![
                                ("podCIDRs".into(), Yaml::Seq(vec![s("10.0.0.0/24")])),
                                ("taints".into(), Yaml::Seq(vec![])),
                            ]),
                        ),
                    ]),
                    Yaml::Map(vec![("kind".into(), s("Peer"))]),
                ]),
            ),
            ("kind".into(), s("List")),
        ]);
        assert_eq!(docs, vec![want]);
    }

    #[test]
    fn literal_block_scalars_keep_their_lines() {
        let docs = parse("a: |\n  one\n\n    two\nb: |-\n  x\n", Part::All).unwrap();
        let Yaml::Map(m) = &docs[0] else { panic!("a map") };
        assert_eq!(m[0].1, Yaml::Str { text: "one\n\n  two\n".into(), plain: false });
        assert_eq!(m[1].1, Yaml::Str { text: "x".into(), plain: false });
    }

    #[test]
    fn anything_unusual_is_left_to_the_full_parser() {
        for text in [
            "a: &x 1\nb: *x\n",
            "a: [1, 2]\n",
            "a: {b: c}\n",
            "a: !!str 1\n",
            "a: >\n  folded\n",
            "a: \"multi\n  line\"\n",
            "a: plain\n  continued\n",
            "a: b: c\n",
            "%YAML 1.2\n---\na: 1\n",
            "a:\n\t- x\n",
            "? complex\n: key\n",
            "{\"json\": true}\n",
        ] {
            assert!(parse(text, Part::All).is_err(), "{text:?}");
        }
    }

    #[test]
    fn only_what_kilo_reads_is_built_for_objects() {
        let text = "kind: List\nitems:\n- kind: Node\n  metadata:\n    name: a\n    uid: x\n    \
                    managedFields:\n    - manager: kubectl\n  status:\n    images:\n    - names:\n      \
                    - a:b\n    odd: [anything, {goes}]\n  spec: {}\n";
        let docs = parse(text, Part::Object).unwrap();
        let item = Yaml::Map(vec![
            ("kind".into(), s("Node")),
            ("metadata".into(), Yaml::Map(vec![("name".into(), s("a"))])),
            ("spec".into(), Yaml::Map(vec![])),
        ]);
        assert_eq!(
            docs,
            vec![Yaml::Map(vec![
                ("kind".into(), s("List")),
                ("items".into(), Yaml::Seq(vec![item])),
            ])]
        );
    }

    #[test]
    fn nesting_past_the_limit_is_left_to_the_full_parser() {
        let mut text = String::new();
        for level in 0..(MAX_DEPTH + 5) {
            text.push_str(&format!("{}k:\n", " ".repeat(level)));
        }
        assert!(parse(&text, Part::All).is_err());
    }

    #[test]
    fn plain_scalars_are_typed_like_yaml() {
        let text = "i: 51820\nn: -1\nb: true\ns: 10.0.0.1\nz: ~\nq: \"10\"\n";
        let json = parse(text, Part::All).unwrap()[0].to_json();
        let want = serde_json::json!({"i": 51820, "n": -1, "b": true, "s": "10.0.0.1", "z": null, "q": "10"});
        assert_eq!(json, want);
        for other in ["f: 1.5\n", "h: 0x1F\n", "o: 007\n", "i: .inf\n", "b: True\n", "e: 1e3\n"] {
            assert!(parse(other, Part::All).is_err(), "{other}");
        }
        let key = "k: 0xAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
        assert!(parse(key, Part::All).is_ok(), "a base64 key that starts with 0x is text");
    }
}
