//! Turning an error and its causes into the one line a cell's reasons and the terminal
//! show. Errors stay typed until they become a reason or reach the binary's edge.

/// An error with all its causes, on one line (causes that repeat their parent's text are
/// left out).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    kchaos_model::escape_controls(&text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("Cannot write {path}")]
    struct Outer {
        path: String,
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn causes_are_joined_on_one_line() {
        let e = Outer {
            path: "/x\ny".into(),
            source: std::io::Error::other("disk full"),
        };
        assert_eq!(error_chain(&e), "Cannot write /x\\ny: disk full");
    }
}
