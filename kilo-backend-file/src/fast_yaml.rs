//! A fast reader for the block-style YAML that `kubectl get -o yaml` prints: block mappings and
//! sequences, plain and single-line quoted scalars, literal block scalars (`|`), comments,
//! `---` separators, `{}` and `[]`.
//!
//! Anything else (flow collections with content, anchors, aliases, tags, folded or multi-line
//! scalars, directives, odd indentation) makes it give up with [`Unsupported`], and the caller
//! reads the text with the full YAML parser instead, which also reports errors. It never
//! recurses deeper than the text's indentation allows, and refuses more than [`MAX_DEPTH`]
//! levels.
//!
//! [`read_objects`] reads Kubernetes objects line by line, borrowing from the text, and hands
//! each one to a [`Sink`] as soon as it ends, with only the fields Kilo reads ([`Item`]): no tree
//! of the whole text is built. What Kilo does not read (`status`, `managedFields`, …) is skipped
//! by its indentation; labels and annotations are read (so that a value the full parser would
//! read differently still sends the text there), but only those the sink keeps are kept.

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

/// The fields of one Kubernetes object that Kilo reads, borrowed from the text where they can
/// be.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Item<'a> {
    /// `apiVersion`.
    pub(crate) api_version: Option<Cow<'a, str>>,
    /// `kind`.
    pub(crate) kind: Option<Cow<'a, str>>,
    /// `metadata.name`.
    pub(crate) name: Option<Cow<'a, str>>,
    /// The entries of `metadata.labels` that the sink keeps ([`Sink::keep_label`]), in text
    /// order (of a repeated key, the last counts); a `null` value is `""`.
    pub(crate) labels: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// The entries of `metadata.annotations` that the sink keeps ([`Sink::keep_annotation`]),
    /// as `labels`.
    pub(crate) annotations: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// `spec`, unless it is absent or `null`.
    pub(crate) spec: Option<Yaml<'a>>,
}

impl Item<'_> {
    fn clear(&mut self) {
        self.api_version = None;
        self.kind = None;
        self.name = None;
        self.labels.clear();
        self.annotations.clear();
        self.spec = None;
    }
}

/// Whether an object of this kind is a list whose `items` are the objects.
pub(crate) fn is_list(kind: &str) -> bool {
    matches!(kind, "List" | "NodeList" | "PeerList")
}

/// Where [`read_objects`] puts the objects it reads.
///
/// An object's `items` are read before its `kind` may be known (kubectl prints `kind: List`
/// after them), so they go to the sink as they are read, and are taken back
/// ([`Sink::rollback`]) when the object turns out not to be a list.
pub(crate) trait Sink<'a> {
    /// A point in the sequence of objects.
    type Mark;
    /// Whether [`Item::labels`] keeps the label `key`.
    fn keep_label(&self, key: &str) -> bool;
    /// Whether [`Item::annotations`] keeps the annotation `key`.
    fn keep_annotation(&self, key: &str) -> bool;
    /// The next object (never a list: [`is_list`]), in text order.
    fn object(&mut self, item: &Item<'a>);
    /// The current point.
    fn mark(&self) -> Self::Mark;
    /// Forgets every object given since `mark` was taken.
    fn rollback(&mut self, mark: Self::Mark);
}

/// Reads every document of `text` as a Kubernetes object (a list's items in its place) into
/// `sink`. On [`Unsupported`], what the sink was given is not the text's objects: the caller
/// starts again with the full parser.
pub(crate) fn read_objects<'a, S: Sink<'a>>(text: &'a str, sink: &mut S) -> R<()> {
    let mut p = Parser::new(text);
    while let Some((indent, t)) = p.peek()? {
        if t == "---" {
            p.advance();
            continue;
        }
        if indent != 0 || t.starts_with("---") || t.starts_with("...") || t.starts_with('%') {
            return Err(Unsupported);
        }
        // A document that is a sequence is not an object.
        if is_item(t) {
            return Err(Unsupported);
        }
        p.nested(|p| p.object(indent, sink))?;
        if let Some((_, t)) = p.peek()?
            && t != "---"
        {
            return Err(Unsupported);
        }
    }
    Ok(())
}

/// Parses every document of `text` into a tree.
#[cfg(test)]
pub(crate) fn parse(text: &str) -> R<Vec<Yaml<'_>>> {
    let mut p = Parser::new(text);
    let mut docs = Vec::new();
    while let Some((indent, t)) = p.peek()? {
        if t == "---" {
            p.advance();
            continue;
        }
        if indent != 0 || t.starts_with("---") || t.starts_with("...") || t.starts_with('%') {
            return Err(Unsupported);
        }
        docs.push(p.block()?);
        if let Some((_, t)) = p.peek()?
            && t != "---"
        {
            return Err(Unsupported);
        }
    }
    Ok(docs)
}

struct Parser<'a> {
    text: &'a str,
    /// Where the next line to look at starts.
    pos: usize,
    /// The current significant line once [`Parser::peek`] found it: its indentation, its
    /// trimmed text, and where the line after it starts.
    line: Option<(usize, &'a str, usize)>,
    /// The rest of the current line after a `- `, read as a line of its own at a deeper column.
    virt: Option<(usize, &'a str)>,
    depth: usize,
    /// Items to reuse (one per level of objects in objects).
    spare: Vec<Item<'a>>,
}

fn is_item(t: &str) -> bool {
    t == "-" || t.starts_with("- ")
}

/// A document marker (`---` or `...`) at the start of a line ends every block.
fn is_marker(indent: usize, t: &str) -> bool {
    indent == 0 && (t.starts_with("---") || t.starts_with("..."))
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser { text, pos: 0, line: None, virt: None, depth: 0, spare: Vec::new() }
    }

    /// The line starting at `pos` (as [`str::lines`] gives it: without `\n` or `\r\n`) and
    /// where the next one starts.
    fn raw_line(&self, pos: usize) -> (&'a str, usize) {
        let rest = &self.text[pos..];
        match rest.find('\n') {
            Some(i) => {
                let line = &rest[..i];
                (line.strip_suffix('\r').unwrap_or(line), pos + i + 1)
            }
            None => (rest, self.text.len()),
        }
    }

    /// The current significant line: its indentation and its trimmed text.
    fn peek(&mut self) -> R<Option<(usize, &'a str)>> {
        if let Some(v) = self.virt {
            return Ok(Some(v));
        }
        if let Some((indent, t, _)) = self.line {
            return Ok(Some((indent, t)));
        }
        let bytes = self.text.as_bytes();
        while self.pos < bytes.len() {
            // The line as `raw_line` gives it, its leading spaces counted on the way.
            let start = self.pos;
            let mut i = start;
            while i < bytes.len() && bytes[i] == b' ' {
                i += 1;
            }
            let (end, next) = match find_byte(bytes, i, b'\n') {
                Some(j) => (j, j + 1),
                None => (bytes.len(), bytes.len()),
            };
            let end = if next > end && end > i && bytes[end - 1] == b'\r' { end - 1 } else { end };
            let content = &self.text[i..end];
            if content.starts_with('\t') {
                return Err(Unsupported);
            }
            let t = content.trim_end();
            if t.is_empty() || t.starts_with('#') {
                self.pos = next;
                continue;
            }
            let indent = i - start;
            self.line = Some((indent, t, next));
            return Ok(Some((indent, t)));
        }
        Ok(None)
    }

    /// Consumes the line [`Parser::peek`] returned.
    fn advance(&mut self) {
        self.virt = None;
        if let Some((_, _, next)) = self.line.take() {
            self.pos = next;
        }
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
    fn block(&mut self) -> R<Yaml<'a>> {
        let (indent, t) = self.peek()?.ok_or(Unsupported)?;
        self.nested(|p| if is_item(t) { p.seq(indent) } else { p.map(indent) })
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

    fn seq(&mut self, indent: usize) -> R<Yaml<'a>> {
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
                    Some((next, _)) if next > indent => self.block()?,
                    _ => Yaml::Null,
                });
            } else if is_item(rest) || split_key(rest)?.is_some() {
                self.virt = Some((indent + (t.len() - rest.len()), rest));
                items.push(self.block()?);
            } else {
                self.advance();
                items.push(self.scalar(rest, indent)?);
            }
        }
        Ok(Yaml::Seq(items))
    }

    fn map(&mut self, indent: usize) -> R<Yaml<'a>> {
        let mut entries = Vec::new();
        while let Some((key, rest)) = self.key(indent)? {
            let value = self.value(rest, indent)?;
            entries.push((key, value));
        }
        Ok(Yaml::Map(entries))
    }

    /// The next key of a mapping at `indent` and the rest of its line (the line consumed);
    /// `None` at the mapping's end.
    fn key(&mut self, indent: usize) -> R<Option<(Cow<'a, str>, &'a str)>> {
        let Some((ind, t)) = self.peek()? else { return Ok(None) };
        if ind < indent || is_marker(ind, t) {
            return Ok(None);
        }
        if ind > indent || is_item(t) {
            return Err(Unsupported);
        }
        let (key, rest) = split_key(t)?.ok_or(Unsupported)?;
        self.advance();
        Ok(Some((key, rest)))
    }

    /// The value of a key at `indent` whose line was consumed; `rest` is the line after the
    /// key's colon.
    fn value(&mut self, rest: &'a str, indent: usize) -> R<Yaml<'a>> {
        if !rest.is_empty() {
            return self.scalar(rest, indent);
        }
        match self.peek()? {
            Some((next, _)) if next > indent => self.block(),
            Some((next, t)) if next == indent && is_item(t) => self.nested(|p| p.seq(indent)),
            _ => Ok(Yaml::Null),
        }
    }

    /// As [`Parser::value`], for a value that must be a scalar or `null` (`None`); anything
    /// else is [`Unsupported`] (Kilo reads such a field as text: the full parser reports it).
    fn text(&mut self, rest: &'a str, indent: usize) -> R<Option<Cow<'a, str>>> {
        if rest.is_empty() {
            return match self.peek()? {
                Some((next, t)) if next > indent || (next == indent && is_item(t)) => {
                    Err(Unsupported)
                }
                _ => Ok(None),
            };
        }
        match self.scalar(rest, indent)? {
            Yaml::Null => Ok(None),
            Yaml::Str { text, .. } => Ok(Some(text)),
            _ => Err(Unsupported),
        }
    }

    /// As [`Parser::value`], for a value that must be a mapping (`{}`, or a block mapping
    /// indented more than `indent`) or `null`: `Some(indentation)` of a block mapping's keys,
    /// `None` when it is empty. Anything else is [`Unsupported`].
    fn open_map(&mut self, rest: &'a str, indent: usize) -> R<Option<usize>> {
        if !rest.is_empty() {
            return match self.scalar(rest, indent)? {
                Yaml::Null | Yaml::Map(_) => Ok(None),
                _ => Err(Unsupported),
            };
        }
        match self.peek()? {
            Some((next, t)) if next > indent && !is_item(t) => Ok(Some(next)),
            Some((next, t)) if next > indent || (next == indent && is_item(t)) => Err(Unsupported),
            _ => Ok(None),
        }
    }

    /// One Kubernetes object: a block mapping at `indent` starting at the current line. A list's
    /// items go to the sink; any other object goes there once it ends.
    fn object<S: Sink<'a>>(&mut self, indent: usize, sink: &mut S) -> R<()> {
        let mut item = self.spare.pop().unwrap_or_default();
        let mark = self.object_fields(indent, sink, &mut item)?;
        if !is_list(item.kind.as_deref().unwrap_or("")) {
            if let Some(mark) = mark {
                sink.rollback(mark);
            }
            sink.object(&item);
        }
        item.clear();
        self.spare.push(item);
        Ok(())
    }

    /// The fields of an object into `item`, its `items` into the sink: the mark taken before
    /// them, if it has some.
    fn object_fields<S: Sink<'a>>(
        &mut self,
        indent: usize,
        sink: &mut S,
        item: &mut Item<'a>,
    ) -> R<Option<S::Mark>> {
        let mut seen = 0u8;
        let mut mark = None;
        while let Some((key, rest)) = self.key(indent)? {
            let field = match key.as_ref() {
                "apiVersion" => 1,
                "kind" => 2,
                "metadata" => 4,
                "spec" => 8,
                "items" => 16,
                _ => {
                    self.skip(indent)?;
                    continue;
                }
            };
            // A repeated field: the full parser decides.
            if seen & field != 0 {
                return Err(Unsupported);
            }
            seen |= field;
            match field {
                1 => item.api_version = self.text(rest, indent)?,
                2 => item.kind = self.text(rest, indent)?,
                4 => {
                    if let Some(inner) = self.open_map(rest, indent)? {
                        self.nested(|p| p.metadata(inner, sink, item))?;
                    }
                }
                8 => {
                    item.spec = match self.value(rest, indent)? {
                        Yaml::Null => None,
                        spec => Some(spec),
                    }
                }
                _ => {
                    mark = Some(sink.mark());
                    self.items(rest, indent, sink)?;
                }
            }
        }
        Ok(mark)
    }

    /// `metadata`'s keys at `indent`.
    fn metadata<S: Sink<'a>>(&mut self, indent: usize, sink: &S, item: &mut Item<'a>) -> R<()> {
        let mut seen = 0u8;
        while let Some((key, rest)) = self.key(indent)? {
            let field = match key.as_ref() {
                "name" => 1,
                "labels" => 2,
                "annotations" => 4,
                _ => {
                    self.skip(indent)?;
                    continue;
                }
            };
            if seen & field != 0 {
                return Err(Unsupported);
            }
            seen |= field;
            match field {
                1 => item.name = self.text(rest, indent)?,
                2 => self.strings(rest, indent, &mut item.labels, |k| sink.keep_label(k))?,
                _ => {
                    self.strings(rest, indent, &mut item.annotations, |k| sink.keep_annotation(k))?
                }
            }
        }
        Ok(())
    }

    /// A mapping of scalars (labels, annotations): the entries `keep` keeps into `out`.
    fn strings(
        &mut self,
        rest: &'a str,
        indent: usize,
        out: &mut Vec<(Cow<'a, str>, Cow<'a, str>)>,
        keep: impl Fn(&str) -> bool,
    ) -> R<()> {
        let Some(inner) = self.open_map(rest, indent)? else { return Ok(()) };
        self.nested(|p| {
            while let Some((key, rest)) = p.key(inner)? {
                let value = p.text(rest, inner)?;
                if keep(&key) {
                    out.push((key, value.unwrap_or_default()));
                }
            }
            Ok(())
        })
    }

    /// An object's `items`: a sequence of objects (`null` entries are nothing), or `null`.
    fn items<S: Sink<'a>>(&mut self, rest: &'a str, indent: usize, sink: &mut S) -> R<()> {
        if !rest.is_empty() {
            return match self.scalar(rest, indent)? {
                Yaml::Null => Ok(()),
                Yaml::Seq(items) if items.is_empty() => Ok(()),
                _ => Err(Unsupported),
            };
        }
        match self.peek()? {
            Some((next, t)) if next > indent => {
                if !is_item(t) {
                    return Err(Unsupported);
                }
                self.nested(|p| p.objects(next, sink))
            }
            Some((next, t)) if next == indent && is_item(t) => {
                self.nested(|p| p.objects(indent, sink))
            }
            _ => Ok(()),
        }
    }

    /// A block sequence of objects at `indent` (as [`Parser::seq`]).
    fn objects<S: Sink<'a>>(&mut self, indent: usize, sink: &mut S) -> R<()> {
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
                match self.peek()? {
                    Some((next, t)) if next > indent => {
                        if is_item(t) {
                            return Err(Unsupported);
                        }
                        self.nested(|p| p.object(next, sink))?;
                    }
                    _ => {}
                }
            } else if is_item(rest) {
                return Err(Unsupported);
            } else if split_key(rest)?.is_some() {
                let inner = indent + (t.len() - rest.len());
                self.virt = Some((inner, rest));
                self.nested(|p| p.object(inner, sink))?;
            } else {
                self.advance();
                match self.scalar(rest, indent)? {
                    Yaml::Null => {}
                    // `- {}`: an object without fields.
                    Yaml::Map(_) => sink.object(&Item::default()),
                    _ => return Err(Unsupported),
                }
            }
        }
        Ok(())
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
                if find_pair(text, b':', b' ').is_some()
                    || text.ends_with(':')
                    || find_pair(text, b' ', b'#').is_some()
                {
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
        while self.pos < self.text.len() {
            let (raw, next) = self.raw_line(self.pos);
            let spaces = raw.len() - raw.trim_start_matches(' ').len();
            if raw.trim().is_empty() {
                lines.push("");
                self.pos = next;
                continue;
            }
            let ci = *content_indent.get_or_insert(spaces);
            if ci <= indent || spaces < ci {
                break;
            }
            lines.push(&raw[ci..]);
            self.pos = next;
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
    // Every such scalar starts with one of these (a digit, a sign, `.`, `inf`, `nan`, `True`,
    // `False`): most text is told apart here, without trying to read it as a number.
    if !t.starts_with(|c: char| c.is_ascii_digit() || "+-.iInNTF".contains(c)) {
        return false;
    }
    // They are made of letters, digits, `+`, `-`, `_` and at most one `.` (an address or a CIDR
    // is not).
    let mut dots = 0;
    for b in t.bytes() {
        match b {
            b'.' => dots += 1,
            b'+' | b'-' | b'_' => {}
            _ if b.is_ascii_alphanumeric() => {}
            _ => return false,
        }
    }
    if dots > 1 {
        return false;
    }
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
    match find_pair(s, b' ', b'#') {
        Some(i) => s[..i].trim_end(),
        None => s,
    }
}

/// Where the first `a` followed by `b` is in `s` (`s.find(": ")` without a string searcher;
/// both are ASCII, so the index is a character boundary).
fn find_pair(s: &str, a: u8, b: u8) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut from = 0;
    while let Some(i) = find_byte(bytes, from, a) {
        if bytes.get(i + 1) == Some(&b) {
            return Some(i);
        }
        from = i + 1;
    }
    None
}

/// Where the first `byte` at or after `from` is in `bytes`, eight bytes at a time.
fn find_byte(bytes: &[u8], from: usize, byte: u8) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let pattern = ONES * u64::from(byte);
    let rest = bytes.get(from..)?;
    let mut chunks = rest.chunks_exact(8);
    for (n, c) in chunks.by_ref().enumerate() {
        let word = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) ^ pattern;
        // The lowest byte of `word` that is zero (`byte` in the text) sets the high bit of its
        // byte here; bits above it may be set by borrows, never bits below.
        let zero = word.wrapping_sub(ONES) & !word & HIGHS;
        if zero != 0 {
            return Some(from + n * 8 + (zero.trailing_zeros() / 8) as usize);
        }
    }
    let tail = chunks.remainder();
    tail.iter().position(|&b| b == byte).map(|i| from + (rest.len() - tail.len()) + i)
}

/// `key: rest` or `key:` → the key and the rest; `None` when the line is not a key.
fn split_key(t: &str) -> R<Option<(Cow<'_, str>, &str)>> {
    let (key, after) = if t.starts_with('"') || t.starts_with('\'') {
        let (key, after) = quoted(t)?;
        (key, after)
    } else {
        let end = match find_pair(t, b':', b' ') {
            Some(i) => i,
            None if t.ends_with(':') => t.len() - 1,
            None => return Ok(None),
        };
        let key = &t[..end];
        if key.is_empty()
            || find_pair(key, b' ', b'#').is_some()
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
    let body = &s[1..];
    // Without escapes (`''`, `\`), the text is a slice of the line.
    let plain_end = match q {
        b'\'' => body.find('\'').filter(|&i| !body[i + 1..].starts_with('\'')),
        _ => body
            .bytes()
            .position(|b| b == b'"' || b == b'\\')
            .filter(|&i| body.as_bytes()[i] == b'"'),
    };
    if let Some(i) = plain_end {
        return Ok((Cow::Borrowed(&body[..i]), &body[i + 1..]));
    }
    if q == b'\'' {
        let mut out = String::new();
        let mut rest = body;
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
    /// The text of a scalar that [`Yaml::to_json`] makes a JSON string (not `null`, a boolean or
    /// a number).
    pub(crate) fn json_str(&self) -> Option<&str> {
        match self {
            Yaml::Str { text, plain: false } => Some(text),
            Yaml::Str { text, plain: true } => match text.as_ref() {
                "true" | "false" => None,
                t if is_canonical_int(t) => None,
                t => Some(t),
            },
            _ => None,
        }
    }

    /// The value of the last entry named `key` of a mapping (as JSON objects keep it).
    pub(crate) fn get(&self, key: &str) -> Option<&Self> {
        match self {
            Yaml::Map(entries) => entries.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

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
        let docs = parse(text).unwrap();
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
        let docs = parse("a: |\n  one\n\n    two\nb: |-\n  x\n").unwrap();
        let Yaml::Map(m) = &docs[0] else { panic!("a map") };
        assert_eq!(m[0].1, Yaml::Str { text: "one\n\n  two\n".into(), plain: false });
        assert_eq!(m[1].1, Yaml::Str { text: "x".into(), plain: false });
    }

    #[test]
    fn crlf_lines_read_as_lf_lines() {
        let docs = parse("a: b\r\nc:\r\n- d\r\ne: |\r\n  f\r\n").unwrap();
        let want = Yaml::Map(vec![
            ("a".into(), s("b")),
            ("c".into(), Yaml::Seq(vec![s("d")])),
            ("e".into(), Yaml::Str { text: "f\n".into(), plain: false }),
        ]);
        assert_eq!(docs, vec![want]);
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
            assert!(parse(text).is_err(), "{text:?}");
        }
    }

    /// A sink that keeps every object as a line of text, and the labels and annotations named
    /// `keep`.
    #[derive(Default)]
    struct Collect {
        objects: Vec<String>,
    }

    impl<'a> Sink<'a> for Collect {
        type Mark = usize;
        fn keep_label(&self, key: &str) -> bool {
            key == "keep"
        }
        fn keep_annotation(&self, key: &str) -> bool {
            key == "keep"
        }
        fn object(&mut self, item: &Item<'a>) {
            self.objects.push(format!(
                "{} {} {} labels {:?} annotations {:?} spec {}",
                item.api_version.as_deref().unwrap_or("-"),
                item.kind.as_deref().unwrap_or("-"),
                item.name.as_deref().unwrap_or("-"),
                item.labels,
                item.annotations,
                item.spec.as_ref().map_or("-".to_string(), |s| s.to_json().to_string()),
            ));
        }
        fn mark(&self) -> usize {
            self.objects.len()
        }
        fn rollback(&mut self, mark: usize) {
            self.objects.truncate(mark);
        }
    }

    fn objects(text: &str) -> Vec<String> {
        let mut sink = Collect::default();
        read_objects(text, &mut sink).unwrap_or_else(|_| panic!("{text:?} is read"));
        sink.objects
    }

    #[test]
    fn only_what_kilo_reads_is_kept_of_objects() {
        let text = "kind: List\nitems:\n- kind: Node\n  metadata:\n    name: a\n    uid: x\n    \
                    labels:\n      keep: l\n      other: o\n    annotations:\n      x: ~\n      \
                    keep:\n    managedFields:\n    - manager: kubectl\n  status:\n    images:\n    \
                    - names:\n      - a:b\n    odd: [anything, {goes}]\n  spec: {}\n";
        assert_eq!(
            objects(text),
            [r#"- Node a labels [("keep", "l")] annotations [("keep", "")] spec {}"#]
        );
    }

    #[test]
    fn items_are_objects_of_lists_only_whenever_the_kind_comes() {
        let list_after = "apiVersion: v1\nitems:\n- kind: Node\n  metadata:\n    name: a\n- ~\n- {}\n\
                          - kind: NodeList\n  items:\n  - kind: Peer\n    metadata:\n      name: p\n\
                          kind: List\n";
        assert_eq!(
            objects(list_after),
            [
                "- Node a labels [] annotations [] spec -",
                "- - - labels [] annotations [] spec -",
                "- Peer p labels [] annotations [] spec -"
            ]
        );
        let not_a_list = "apiVersion: v1\nitems:\n- kind: Node\n  metadata:\n    name: a\n\
                          kind: Pod\nmetadata:\n  name: web\n---\nkind: Node\nitems: []\n\
                          metadata: {}\nspec:\n  podCIDR: 10.0.0.0/24\n";
        assert_eq!(
            objects(not_a_list),
            [
                "v1 Pod web labels [] annotations [] spec -",
                r#"- Node - labels [] annotations [] spec {"podCIDR":"10.0.0.0/24"}"#,
            ]
        );
        // An object that is not a list, with items that are lists, inside a list.
        let nested = "kind: List\nitems:\n- kind: Thing\n  items:\n  - kind: List\n    items:\n    \
                      - kind: Node\n- kind: Peer\n";
        assert_eq!(
            objects(nested),
            [
                "- Thing - labels [] annotations [] spec -",
                "- Peer - labels [] annotations [] spec -"
            ]
        );
    }

    #[test]
    fn fields_kilo_reads_as_text_are_text_or_the_full_parser_decides() {
        for text in [
            "kind: Node\nkind: Node\n",
            "kind: Node\nmetadata:\n  name: a\n  name: b\n",
            "kind:\n  a: b\n",
            "kind: []\n",
            "kind: Node\nmetadata: []\n",
            "kind: Node\nmetadata:\n- a\n",
            "kind: Node\nmetadata:\n  annotations: x\n",
            "kind: Node\nmetadata:\n  annotations:\n    a:\n      b: c\n",
            "kind: Node\nmetadata:\n  labels:\n  - a\n",
            "kind: List\nitems: {}\n",
            "kind: List\nitems:\n  a: b\n",
            "kind: List\nitems:\n- - a\n",
            "kind: List\nitems:\n- x\n",
            "kind: List\nitems:\n- []\n",
            "- kind: Node\n",
        ] {
            assert!(read_objects(text, &mut Collect::default()).is_err(), "{text:?}");
        }
    }

    #[test]
    fn nesting_past_the_limit_is_left_to_the_full_parser() {
        let mut text = String::new();
        for level in 0..(MAX_DEPTH + 5) {
            text.push_str(&format!("{}k:\n", " ".repeat(level)));
        }
        assert!(parse(&text).is_err());
        let mut lists = String::new();
        for level in 0..(MAX_DEPTH + 5) {
            lists.push_str(&format!("{0}kind: List\n{0}items:\n{0}- ", "  ".repeat(level)));
        }
        lists.push_str("kind: Node\n");
        assert!(read_objects(&lists, &mut Collect::default()).is_err());
    }

    #[test]
    fn plain_scalars_are_typed_like_yaml() {
        let text = "i: 51820\nn: -1\nb: true\ns: 10.0.0.1\nz: ~\nq: \"10\"\n";
        let json = parse(text).unwrap()[0].to_json();
        let want = serde_json::json!({"i": 51820, "n": -1, "b": true, "s": "10.0.0.1", "z": null, "q": "10"});
        assert_eq!(json, want);
        for other in [
            "f: 1.5\n",
            "h: 0x1F\n",
            "o: 007\n",
            "i: .inf\n",
            "b: True\n",
            "e: 1e3\n",
            "n: nan\n",
            "n: -inf\n",
            "i: Infinity\n",
            "p: +1\n",
            "d: .5\n",
        ] {
            assert!(parse(other).is_err(), "{other}");
        }
        let key = "k: 0xAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
        assert!(parse(key).is_ok(), "a base64 key that starts with 0x is text");
    }

    #[test]
    fn json_strings_are_the_scalars_json_reads_as_strings() {
        let doc = parse("a: x\nb: true\nc: 10\nd: \"10\"\ne: -0\nf: ~\ng: []\n").unwrap();
        let json = doc[0].to_json();
        for key in ["a", "b", "c", "d", "e", "f", "g"] {
            let y = doc[0].get(key).unwrap();
            assert_eq!(y.json_str(), json[key].as_str(), "{key}");
        }
        assert_eq!(parse("a: 1\na: x\n").unwrap()[0].get("a").unwrap().json_str(), Some("x"));
    }

    /// [`resolves_differently`] without the checks that only make it faster.
    fn resolves_differently_slowly(t: &str) -> bool {
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

    #[test]
    fn numbers_and_booleans_are_told_from_text_as_before() {
        for t in [
            "1",
            "-1",
            "+1",
            "007",
            "1.5",
            "1e3",
            "1E-3",
            ".5",
            "5.",
            "inf",
            "-Infinity",
            "NaN",
            ".inf",
            "-.INF",
            ".NaN",
            "0x1F",
            "0o17",
            "0b101",
            "1_000",
            "True",
            "FALSE",
            "true",
            "10.0.0.1",
            "10.0.0.0/24",
            "1.2.3.4:5",
            "::1",
            "0xZZ",
            "i",
            "n",
            "Tx",
            "-",
            "+-1",
            "--0x1f",
            "1.5.6",
            "e3",
            "infinit",
            "1 2",
        ] {
            assert_eq!(resolves_differently(t), resolves_differently_slowly(t), "{t}");
        }
    }

    proptest::proptest! {
        #[test]
        fn the_fast_scalar_check_agrees_with_the_slow_one(t in "[-+._0-9a-fA-FxobinfatyNIT:/ ]{1,8}") {
            proptest::prop_assert_eq!(resolves_differently(&t), resolves_differently_slowly(&t));
        }

        #[test]
        fn find_byte_finds_the_first_byte(
            bytes in proptest::collection::vec(proptest::sample::select(vec![b'a', b'\n', b':', b' ', 0x80, 0xff, 0x0a ^ 0x80]), 0..40),
            from in 0usize..45,
        ) {
            for byte in [b'\n', b':', b' ', 0xff] {
                let want = bytes.get(from..).and_then(|r| r.iter().position(|&b| b == byte)).map(|i| i + from);
                proptest::prop_assert_eq!(find_byte(&bytes, from, byte), want);
            }
        }
    }

    #[test]
    fn pairs_are_found_where_str_find_finds_them() {
        for s in ["a: b", "a:b: c", "::", "a :", "x #y #z", "", ":", "a:  b"] {
            assert_eq!(find_pair(s, b':', b' '), s.find(": "), "{s:?}");
            assert_eq!(find_pair(s, b' ', b'#'), s.find(" #"), "{s:?}");
        }
    }
}
