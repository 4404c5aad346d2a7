//! Text from probes and clients made safe for one log or terminal line.
use std::borrow::Cow;

/// `s` with control characters escaped (`\n`, `\u{1b}`, ...), safe for one log or terminal
/// line. Borrowed when there is nothing to escape.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `s` cut to at most `max` bytes (on a character boundary) with control characters
/// escaped; a cut text says how long it was.
pub fn bounded_text(s: &str, max: usize) -> String {
    if s.len() <= max {
        return printable(s).into_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", printable(&s[..end]), s.len())
}
