//! Small pieces of Go's standard library and of Kubernetes' validation whose exact behaviour and
//! messages upstream Kilo exposes: `base64.StdEncoding.DecodeString`, `strconv.Quote` and
//! `validation.IsDNS1123Subdomain`.

/// Go's `base64.StdEncoding.DecodeString`: standard alphabet, `=` padding required, `\r` and
/// `\n` ignored anywhere, non-zero trailing bits accepted. The error is Go's `CorruptInputError`
/// offset (`illegal base64 data at input byte N`).
pub(crate) fn base64_decode(text: &str) -> Result<Vec<u8>, usize> {
    let src = text.as_bytes();
    let len = src.len();
    let mut out = Vec::with_capacity(len / 4 * 3 + 3);
    let mut si = 0;
    let skip_newlines = |mut si: usize| {
        while si < len && (src[si] == b'\n' || src[si] == b'\r') {
            si += 1;
        }
        si
    };
    while si < len {
        let mut dbuf = [0u8; 4];
        let mut dlen = 4;
        let mut j = 0;
        let mut trailing = None;
        while j < 4 {
            if si == len {
                if j == 0 {
                    return Ok(out);
                }
                return Err(si - j);
            }
            let c = src[si];
            si += 1;
            if let Some(v) = sextet(c) {
                dbuf[j] = v;
                j += 1;
                continue;
            }
            if c == b'\n' || c == b'\r' {
                continue;
            }
            if c != b'=' || j < 2 {
                return Err(si - 1);
            }
            if j == 2 {
                si = skip_newlines(si);
                if si == len {
                    return Err(len);
                }
                if src[si] != b'=' {
                    return Err(si - 1);
                }
                si += 1;
            }
            si = skip_newlines(si);
            if si < len {
                trailing = Some(si);
            }
            dlen = j;
            break;
        }
        let val = u32::from(dbuf[0]) << 18
            | u32::from(dbuf[1]) << 12
            | u32::from(dbuf[2]) << 6
            | u32::from(dbuf[3]);
        let bytes = [(val >> 16) as u8, (val >> 8) as u8, val as u8];
        out.extend_from_slice(&bytes[..dlen - 1]);
        if let Some(offset) = trailing {
            return Err(offset);
        }
    }
    Ok(out)
}

/// A key as wgtypes' `ParseKey` reads it: Go's base64, exactly 32 bytes.
pub(crate) fn parse_key(value: &str) -> Result<crate::Key, String> {
    match base64_decode(value) {
        Err(offset) => Err(format!("not base64 (illegal base64 data at input byte {offset})")),
        Ok(bytes) => <[u8; 32]>::try_from(bytes.as_slice())
            .map(crate::Key::from_bytes)
            .map_err(|_| format!("decodes to {} bytes, not a 32-byte WireGuard key", bytes.len())),
    }
}

fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Go's `strconv.Quote` (what `%q` prints for a string), for printable text and the usual escapes.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x80 && (c.is_ascii_control()) => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() && (c as u32) <= 0xffff => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\U{:08x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// [`quote`] of at most the first 64 characters, for messages about values of any size.
pub(crate) fn quote_short(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}… ({} bytes)", quote(&s[..cut]), s.len()),
        None => quote(s),
    }
}

/// Kubernetes' `dns1123SubdomainErrorMsg` with its regex, as `validation.RegexError` prints it.
const DNS1123_SUBDOMAIN_REGEX_ERROR: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. \
'example.com', regex used for validation is \
'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// Kubernetes' `validation.IsDNS1123Subdomain`: the list of problems, empty when valid.
pub(crate) fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    let labels_ok = !s.is_empty()
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        });
    if !labels_ok {
        errs.push(DNS1123_SUBDOMAIN_REGEX_ERROR.to_string());
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decoding_reports_go_offsets() {
        assert_eq!(base64_decode("").unwrap(), b"");
        assert_eq!(base64_decode("Zm9v").unwrap(), b"foo");
        assert_eq!(base64_decode("Zm8=").unwrap(), b"fo");
        assert_eq!(base64_decode("Zg==").unwrap(), b"f");
        assert_eq!(base64_decode("Zm\n9v\r\n").unwrap(), b"foo");
        // Non-zero trailing bits are accepted by Go's non-strict decoder.
        assert_eq!(base64_decode("Zh==").unwrap(), b"f");
        assert_eq!(base64_decode("foo!"), Err(3));
        assert_eq!(base64_decode("Zm9"), Err(0));
        assert_eq!(base64_decode("Zm9vYg"), Err(4));
        assert_eq!(base64_decode("Zg="), Err(3));
        assert_eq!(base64_decode("Z==="), Err(1));
        assert_eq!(base64_decode("Zg==Zg=="), Err(4));
        assert_eq!(base64_decode("Zm8=x"), Err(4));
    }

    #[test]
    fn quoting_matches_go_strconv_quote() {
        assert_eq!(quote("foo"), "\"foo\"");
        assert_eq!(quote("a\"b\\c\n\u{1b}"), "\"a\\\"b\\\\c\\n\\x1b\"");
        assert_eq!(quote("é"), "\"é\"");
    }

    #[test]
    fn dns1123_errors_match_kubernetes() {
        assert!(dns1123_subdomain_errors("example.com").is_empty());
        assert_eq!(dns1123_subdomain_errors("Example.com").len(), 1);
        assert_eq!(dns1123_subdomain_errors(&"a".repeat(254)).len(), 1);
        assert_eq!(dns1123_subdomain_errors(&"A".repeat(254)).len(), 2);
        assert!(dns1123_subdomain_errors("-a")[0].starts_with("a lowercase RFC 1123 subdomain"));
    }
}
