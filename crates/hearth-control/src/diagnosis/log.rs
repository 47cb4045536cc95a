//! A log as the rules read it: clean lines (no colour codes, no carriage
//! returns), and the shapes of line they look for — a kernel timestamp in
//! front, a journald-forwarded `ident[pid]: message`.

/// The longest evidence line a finding quotes.
const MAX_LINE: usize = 300;

/// A log split into clean lines.
#[derive(Debug, Default)]
pub(super) struct Log {
    lines: Vec<String>,
}

impl Log {
    /// Splits `text` into lines, and a line into the frames a carriage
    /// return separates: systemd redraws its status spinner on one line
    /// (`\r[ *** ] Job ...\r[  ***] Job ...`), and each frame is a line
    /// of its own here, as on a terminal.
    pub fn new(text: &str) -> Self {
        let mut lines = Vec::new();
        for line in text.lines() {
            let before = lines.len();
            lines.extend(line.split('\r').map(clean).filter(|f| !f.is_empty()));
            if lines.len() == before {
                lines.push(String::new());
            }
        }
        Log { lines }
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// Indices of the lines that satisfy `pred`, in order.
    pub fn matching(&self, pred: impl Fn(&str) -> bool) -> Vec<usize> {
        (0..self.lines.len())
            .filter(|&i| pred(&self.lines[i]))
            .collect()
    }

    pub fn position(&self, pred: impl Fn(&str) -> bool) -> Option<usize> {
        self.lines.iter().position(|l| pred(l))
    }

    /// The last `n` lines that are not blank.
    pub fn tail(&self, n: usize) -> Vec<String> {
        self.before(self.lines.len(), n)
    }

    /// Up to `n` non-blank lines before index `end` (exclusive).
    pub fn before(&self, end: usize, n: usize) -> Vec<String> {
        let mut out: Vec<String> = self.lines[..end.min(self.lines.len())]
            .iter()
            .rev()
            .filter(|l| !l.trim().is_empty())
            .take(n)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// `indices` less the lines that repeat an earlier one's message (the
    /// same words from another pid or at another time).
    pub fn distinct(&self, indices: &[usize]) -> Vec<usize> {
        let mut seen: Vec<&str> = Vec::new();
        let mut out = Vec::new();
        for &i in indices {
            let line = &self.lines[i];
            let words = journal(line).map_or_else(|| message(line), |j| j.text);
            if !seen.contains(&words) {
                seen.push(words);
                out.push(i);
            }
        }
        out
    }

    /// The lines at `indices`, in log order, each once.
    pub fn pick(&self, indices: &[usize]) -> Vec<String> {
        let mut sorted = indices.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        sorted.iter().map(|&i| self.lines[i].clone()).collect()
    }
}

/// One line without colour codes (ANSI escape sequences), carriage
/// returns and other control characters, nor trailing blanks.
pub(super) fn clean(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters... final byte in @..~; else ESC + one.
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if c == '\t' || !c.is_control() {
            out.push(c);
        }
    }
    out.truncate(out.trim_end().len());
    out
}

/// The line without a kernel timestamp (`[    5.137203] `) in front.
pub(super) fn message(line: &str) -> &str {
    let trimmed = line.trim_start();
    if let Some(rest) = trimmed.strip_prefix('[') {
        if let Some((stamp, after)) = rest.split_once(']') {
            let stamp = stamp.trim();
            if !stamp.is_empty() && stamp.chars().all(|c| c.is_ascii_digit() || c == '.') {
                return after.trim_start();
            }
        }
    }
    trimmed
}

/// A line journald forwarded (or a process logged to the kernel):
/// `[  13.8] sh[204]: cannot find config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct JournalLine<'a> {
    pub ident: &'a str,
    pub pid: u32,
    pub text: &'a str,
}

impl JournalLine<'_> {
    /// systemd itself (PID 1), as opposed to a service's own output.
    pub fn is_systemd(&self) -> bool {
        self.ident == "systemd" && self.pid == 1
    }
}

pub(super) fn journal(line: &str) -> Option<JournalLine<'_>> {
    let msg = message(line);
    let (head, text) = msg.split_once("]: ")?;
    let (ident, pid) = head.split_once('[')?;
    if ident.is_empty() || ident.contains(' ') {
        return None;
    }
    Some(JournalLine {
        ident,
        pid: pid.parse().ok()?,
        text,
    })
}

/// `line` shortened to at most [`MAX_LINE`] characters.
pub(super) fn cap(line: &str) -> String {
    match line.char_indices().nth(MAX_LINE) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_owned(),
    }
}

/// Case-insensitive `contains` for ASCII needles.
pub(super) fn contains_ci(haystack: &str, needle: &str) -> bool {
    haystack
        .to_ascii_lowercase()
        .contains(&needle.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_codes_and_carriage_returns_are_removed() {
        let raw = "[\u{1b}[0;1;31mFAILED\u{1b}[0m] Failed to start \u{1b}[0;1;39magent.service\u{1b}[0m - OAuth agent.\r";
        assert_eq!(
            clean(raw),
            "[FAILED] Failed to start agent.service - OAuth agent."
        );
    }

    #[test]
    fn each_frame_of_a_redrawn_status_line_is_a_line() {
        let raw = "first\n\r\u{1b}[K[ *** ] Job a.service/start running (1s / no limit)\
                   \r\u{1b}[K[  ***] Job a.service/start running (2s / no limit)\r\n\
                   \n\r\u{1b}[K[  OK  ] Started b.service.\r\n";
        let log = Log::new(raw);
        assert_eq!(
            log.lines(),
            [
                "first",
                "[ *** ] Job a.service/start running (1s / no limit)",
                "[  ***] Job a.service/start running (2s / no limit)",
                "",
                "[  OK  ] Started b.service."
            ]
        );
    }

    #[test]
    fn kernel_timestamps_are_stripped_but_status_tags_are_not() {
        assert_eq!(message("[    5.137203] systemd[1]: x"), "systemd[1]: x");
        assert_eq!(
            message("[FAILED] Failed to start x"),
            "[FAILED] Failed to start x"
        );
        assert_eq!(message("hearth: ready"), "hearth: ready");
    }

    #[test]
    fn journal_lines_are_split_into_ident_pid_and_text() {
        let line = journal("[   13.819523] sh[204]: cannot find config").unwrap();
        assert_eq!(
            (line.ident, line.pid, line.text),
            ("sh", 204, "cannot find config")
        );
        assert!(journal("[   13.8] systemd[1]: Reloading.")
            .unwrap()
            .is_systemd());
        assert_eq!(
            journal("[    2.8] virtio_blk virtio0: [vda] 38912 blocks"),
            None
        );
        assert_eq!(journal("hearth: ready"), None);
    }

    #[test]
    fn long_lines_are_capped_on_a_character_boundary() {
        let long = "é".repeat(400);
        let capped = cap(&long);
        assert_eq!(capped.chars().count(), MAX_LINE + 1);
        assert!(capped.ends_with('…'));
    }
}
