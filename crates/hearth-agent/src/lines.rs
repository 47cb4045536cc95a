//! Splitting a service's output into lines: lossy UTF-8, no newline, each
//! cut at 16 KiB (the rest of an over-long line is skipped).

use std::io::{self, BufRead};

/// Longest line kept, in bytes.
pub const MAX_LINE: usize = 16 * 1024;

/// The next line of `r`, at most `max` bytes of it; `None` at the end.
pub fn read_line(r: &mut impl BufRead, max: usize) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let mut seen_any = false;
    loop {
        let buf = match r.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(seen_any.then(|| text(line)));
        }
        seen_any = true;
        let (chunk, found) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        let room = max.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = found.unwrap_or(buf.len());
        r.consume(used);
        if found.is_some() {
            return Ok(Some(text(line)));
        }
    }
}

fn text(mut line: Vec<u8>) -> String {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8_lossy(&line).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<String> {
        let mut r = io::BufReader::with_capacity(4, input);
        std::iter::from_fn(|| read_line(&mut r, max).unwrap()).collect()
    }

    #[test]
    fn lines_are_split_cut_and_made_valid_text() {
        assert_eq!(lines(b"a\nbc\n\nlast", 100), ["a", "bc", "", "last"]);
        assert_eq!(lines(b"0123456789\nok\n", 4), ["0123", "ok"]);
        assert_eq!(lines(b"\xff\xfeok\r\n", 100), ["\u{fffd}\u{fffd}ok"]);
        assert!(lines(b"", 100).is_empty());
    }
}
