//! Tenant patterns for `"tenant_matcher_type": "glob"`, with Go's `path/filepath.Match`
//! semantics on Unix — the function Thanos Receive matches tenants with.
//!
//! Owns the pattern syntax check and the match. Must not drift from Go: a tenant that Thanos
//! routes to one ring must reach the same ring here. That is why this is not a glob crate: the
//! crates differ from Go on exactly the corners an operator might use (`[^a]` vs `[!a]`,
//! backslash escapes, `**`, `{a,b}`), and the whole of Go's grammar is small.
//!
//! Grammar (Go's documentation):
//! ```text
//! pattern = { term }
//! term    = '*'                      any run of bytes other than '/'
//!         | '?'                      one character other than '/'
//!         | '[' [ '^' ] range+ ']'   character class, '^' negates
//!         | c                        the byte c (c not one of * ? \ [)
//!         | '\' c                    the byte c
//! range   = c | '\' c | lo '-' hi    (c, lo, hi not one of \ - ] unless escaped)
//! ```
//! Matching follows Go's algorithm, including its corners: the pattern is cut into chunks at
//! each run of stars (a `*` inside a class does not cut), each chunk is matched at the leftmost
//! place the star before it allows, a star skips single *bytes* (so a class can be tried on
//! the tail of a multi-byte character, which then decodes as U+FFFD), and the last chunk must
//! reach the end of the name. A malformed pattern is rejected when the file is loaded, whereas
//! Go reports it on every match (and Thanos then fails the request).

/// A syntax-checked tenant pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobPattern(String);

/// Why a pattern is malformed.
pub type GlobSyntaxError = &'static str;

const SEPARATOR: u8 = b'/';

impl GlobPattern {
    /// Checks the whole pattern, as Go (1.16 and later) does before it answers "no match".
    pub fn new(pattern: &str) -> Result<Self, GlobSyntaxError> {
        let mut rest = pattern.as_bytes();
        while !rest.is_empty() {
            let (_, chunk, after) = scan_chunk(rest);
            match_chunk(chunk, b"")?;
            rest = after;
        }
        Ok(GlobPattern(pattern.to_string()))
    }

    /// Whether the whole of `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        // The syntax was checked in `new`, so an error cannot happen here; "no match" is the
        // safe answer if it ever did.
        go_match(self.0.as_bytes(), name.as_bytes()).unwrap_or(false)
    }
}

/// Go's `filepath.Match` over bytes.
fn go_match(mut pattern: &[u8], mut name: &[u8]) -> Result<bool, GlobSyntaxError> {
    'pattern: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            // A trailing star takes the rest of the name unless it crosses a separator.
            return Ok(!name.contains(&SEPARATOR));
        }
        // The chunk right here; the last chunk must also use up the name.
        if let Some(tail) = match_chunk(chunk, name)? {
            if tail.is_empty() || !pattern.is_empty() {
                name = tail;
                continue;
            }
        }
        if star {
            // Let the star take 1, 2, ... bytes, never a separator; the first fit wins (Go
            // does not come back to try a longer run once a later chunk fails).
            let mut skip = 0;
            while skip < name.len() && name[skip] != SEPARATOR {
                if let Some(tail) = match_chunk(chunk, &name[skip + 1..])? {
                    // As above: the last chunk must reach the end of the name.
                    if tail.is_empty() || !pattern.is_empty() {
                        name = tail;
                        continue 'pattern;
                    }
                }
                skip += 1;
            }
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

/// Splits off the next chunk: the stars before it (if any), the chunk up to the next star that
/// is outside a class, and the rest.
fn scan_chunk(pattern: &[u8]) -> (bool, &[u8], &[u8]) {
    let stars = pattern.iter().take_while(|b| **b == b'*').count();
    let pattern = &pattern[stars..];
    let mut in_class = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            // An escaped byte never ends a chunk; a lone trailing '\' is reported later.
            b'\\' if i + 1 < pattern.len() => i += 1,
            b'[' => in_class = true,
            b']' => in_class = false,
            b'*' if !in_class => break,
            _ => {}
        }
        i += 1;
    }
    (stars > 0, &pattern[..i], &pattern[i..])
}

/// Matches a star-free chunk against the start of `s`: `Ok(Some(rest of s))`, or `Ok(None)`
/// when it does not match. The chunk is always parsed to its end, so a syntax error is
/// reported whatever `s` is (checking a pattern = matching it against "").
fn match_chunk<'a>(mut chunk: &[u8], mut s: &'a [u8]) -> Result<Option<&'a [u8]>, GlobSyntaxError> {
    let mut failed = false;
    while let Some(&c) = chunk.first() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match c {
            b'[' => {
                let ch = if failed {
                    None
                } else {
                    let (ch, width) = decode_rune(s);
                    s = &s[width..];
                    Some(ch)
                };
                chunk = &chunk[1..];
                let negated = chunk.first() == Some(&b'^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut hit = false;
                let mut ranges = 0;
                loop {
                    if chunk.first() == Some(&b']') && ranges > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (lo, after) = class_char(chunk)?;
                    chunk = after;
                    let mut hi = lo;
                    if chunk.first() == Some(&b'-') {
                        let (h, after) = class_char(&chunk[1..])?;
                        hi = h;
                        chunk = after;
                    }
                    if ch.is_some_and(|ch| lo <= ch && ch <= hi) {
                        hit = true;
                    }
                    ranges += 1;
                }
                if hit == negated {
                    failed = true;
                }
            }
            b'?' => {
                if !failed {
                    if s[0] == SEPARATOR {
                        failed = true;
                    }
                    let (_, width) = decode_rune(s);
                    s = &s[width..];
                }
                chunk = &chunk[1..];
            }
            _ => {
                let literal = if c == b'\\' {
                    chunk = &chunk[1..];
                    *chunk.first().ok_or("ends with an unescaped '\\'")?
                } else {
                    c
                };
                if !failed {
                    if s[0] != literal {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    Ok(if failed { None } else { Some(s) })
}

/// One possibly escaped character of a class range, and the rest of the chunk, which must not
/// be empty (the class still needs its `]`).
fn class_char(chunk: &[u8]) -> Result<(char, &[u8]), GlobSyntaxError> {
    let chunk = match chunk.first() {
        None => return Err("has an unclosed character class"),
        Some(b'-') => return Err("has an unescaped '-' where a class character is expected"),
        Some(b']') => return Err("has an empty character class or range"),
        Some(b'\\') => match &chunk[1..] {
            [] => return Err("ends with an unescaped '\\'"),
            rest => rest,
        },
        Some(_) => chunk,
    };
    let (ch, width) = decode_rune(chunk);
    // Patterns come from a `&str`, so U+FFFD of width 1 (invalid UTF-8) cannot happen here.
    let rest = &chunk[width..];
    if rest.is_empty() {
        return Err("has an unclosed character class");
    }
    Ok((ch, rest))
}

/// Go's `utf8.DecodeRune`: the character at the start of `s` (non-empty) and its width, or
/// U+FFFD of width 1 for a byte that does not start a valid character (as when a star has
/// skipped into the middle of one).
fn decode_rune(s: &[u8]) -> (char, usize) {
    let width = match s[0] {
        0x00..=0x7f => 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return (char::REPLACEMENT_CHARACTER, 1),
    };
    match s
        .get(..width)
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|t| t.chars().next())
    {
        Some(ch) => (ch, width),
        None => (char::REPLACEMENT_CHARACTER, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, name: &str) -> bool {
        GlobPattern::new(pattern)
            .unwrap_or_else(|e| panic!("{pattern:?}: {e}"))
            .matches(name)
    }

    // Cases from the documented semantics of Go's filepath.Match (Unix); the expected answers
    // follow from the grammar and the leftmost-chunk algorithm described above.
    #[test]
    fn matches_like_go_filepath_match() {
        let cases: &[(&str, &str, bool)] = &[
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*", "abc", true),
            ("a*", "ab/c", false),
            ("a*/b", "abc/b", true),
            ("a*/b", "a/c/b", false),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false),
            ("a*b?c*x", "abxbbxdbxebxczzx", true),
            ("a*b?c*x", "abxbbxdbxebxczzy", false),
            ("ab[c]", "abc", true),
            ("ab[b-d]", "abc", true),
            ("ab[e-g]", "abc", false),
            ("ab[^c]", "abc", false),
            ("ab[^b-d]", "abc", false),
            ("ab[^e-g]", "abc", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "ab", false),
            ("a?b", "a☺b", true),
            ("a[^a]b", "a☺b", true),
            ("a???b", "a☺b", false),
            ("a[^a][^a][^a]b", "a☺b", false),
            ("[a-ζ]*", "α", true),
            ("*[a-ζ]", "A", false),
            ("a?b", "a/b", false),
            ("a*b", "a/b", false),
            ("[\\]a]", "]", true),
            ("[\\-]", "-", true),
            ("[x\\-]", "x", true),
            ("[x\\-]", "-", true),
            ("[x\\-]", "z", false),
            ("[\\-x]", "x", true),
            ("[\\-x]", "-", true),
            ("[\\-x]", "a", false),
            ("*x", "xxx", true),
            ("[!a]", "!", true),
            ("[!a]", "b", false),
            ("t1-*", "t1-anything", true),
            ("t1-*", "t2-anything", false),
            ("prefix*", "prefix-1", true),
            ("prefix*", "suffix-1", false),
            ("", "", true),
            ("", "a", false),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(m(pattern, name), *want, "{pattern:?} vs {name:?}");
        }
    }

    #[test]
    fn star_skipping_into_a_character_is_go_compatible() {
        // Go skips bytes: after skipping the first byte of "é", the tail decodes as U+FFFD,
        // which is not 'é', so the negated class matches and Go answers true.
        assert!(m("*[^é]", "é"));
        assert!(!m("[^é]", "é"));
    }

    #[test]
    fn malformed_patterns_are_rejected_whatever_the_name() {
        for bad in [
            "[]a]", "[-]", "[x-]", "[a-b-c]", "[", "[^", "[^bc", "a[", "a\\", "[a", "[\\", "*[",
            "a*[", "ab[a-", "[a-]", "[a-\\", "x*[a-",
        ] {
            assert!(GlobPattern::new(bad).is_err(), "{bad:?} accepted");
        }
        for good in [
            "[a-b]", "\\[", "a\\*", "[\\]]", "[*]", "[^a-c]", "**", "a**b",
        ] {
            assert!(GlobPattern::new(good).is_ok(), "{good:?} rejected");
        }
    }
}
