//! Errors for people and logs: an error and all its sources on one line.
//! Display of hearth's errors never repeats the source's text, so this is
//! how the whole chain is shown once.

/// `outer: cause: root cause`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("could not start the VM")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn every_source_is_shown_once_in_order() {
        let e = Outer(std::io::Error::other("disk full"));
        assert_eq!(error_chain(&e), "could not start the VM: disk full");
    }
}
