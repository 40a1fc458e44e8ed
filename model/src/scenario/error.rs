//! Scenario errors that point at the exact place in the file: `FILE:LINE:COL: key: message`.

use std::fmt;
use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One problem in a scenario file. `line` and `column` are 1-based; `column` counts
/// characters, as editors do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Dotted path of the offending key, e.g. `workload[0].iterations`.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ScenarioError {}

/// Every problem found in one file. Validation keeps going after the first error so an
/// author fixes a file in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioErrors(pub Vec<ScenarioError>);

impl fmt::Display for ScenarioErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::write_lines(f, &self.0)
    }
}

impl std::error::Error for ScenarioErrors {}

/// Turns byte spans into positioned errors for one source file.
pub(crate) struct Locator<'a> {
    file: &'a str,
    source: &'a str,
    root: Option<&'a Spanned<DeTable<'a>>>,
}

impl<'a> Locator<'a> {
    pub fn new(file: &'a str, source: &'a str) -> Locator<'a> {
        Locator {
            file,
            source,
            root: None,
        }
    }

    /// The file's text, for spans inside a value (a window inside a check).
    pub fn source(&self) -> &'a str {
        self.source
    }

    pub fn with_root(mut self, root: &'a Spanned<DeTable<'a>>) -> Locator<'a> {
        self.root = Some(root);
        self
    }

    /// An error at `span`, with the key path found from the parsed document.
    pub fn at(&self, span: Range<usize>, message: impl Into<String>) -> ScenarioError {
        let key = self
            .root
            .and_then(|root| key_path(root.get_ref(), span.start));
        self.at_key(span, key, message)
    }

    pub fn at_key(
        &self,
        span: Range<usize>,
        key: Option<String>,
        message: impl Into<String>,
    ) -> ScenarioError {
        let (line, column) = line_col(self.source, span.start);
        // One line per error, whatever names the file holds.
        ScenarioError {
            file: crate::escape_controls(self.file).into_owned(),
            line,
            column,
            key: key.map(|k| crate::escape_controls(&k).into_owned()),
            message: crate::escape_controls(&message.into()).into_owned(),
        }
    }

    /// Converts a `toml` error, which carries a span and a serde message.
    pub fn toml_error(&self, err: &toml::de::Error) -> ScenarioError {
        let span = err.span().unwrap_or(0..0);
        let message = err.message().trim().to_owned();
        let message = explain_toml_message(&message);
        self.at(span, message)
    }
}

/// A `toml` error from reading `source` (any kchaos TOML file, not only scenarios) as
/// `FILE:LINE:COL: key: message`, the key path found when the document itself parses.
pub fn locate_toml_error(file: &str, source: &str, err: &toml::de::Error) -> ScenarioError {
    let locator = Locator::new(file, source);
    match DeTable::parse(source) {
        Ok(root) => locator.with_root(&root).toml_error(err),
        Err(_) => locator.toml_error(err),
    }
}

/// An error at byte `span` of `source` (any kchaos TOML file) as
/// `FILE:LINE:COL: key: message`, the key path found when the document parses: for files
/// other than scenarios that validate values after deserialising them.
pub fn error_at(
    file: &str,
    source: &str,
    span: Range<usize>,
    message: impl Into<String>,
) -> ScenarioError {
    let locator = Locator::new(file, source);
    match DeTable::parse(source) {
        Ok(root) => locator.with_root(&root).at(span, message),
        Err(_) => locator.at(span, message),
    }
}

/// serde's messages are terse; make the common ones say what is allowed.
fn explain_toml_message(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        return format!("unknown key {rest}");
    }
    if message.starts_with("missing field ") {
        return message.replacen("missing field", "missing required key", 1);
    }
    message.to_owned()
}

/// The 1-based line and column (in characters) of byte `offset` in `source`; for every
/// file kchaos reports errors in as `FILE:LINE:COL`.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

/// The dotted key path whose key or value covers `offset`, e.g. `vm.sysctl."kernel.x"`.
fn key_path(table: &DeTable<'_>, offset: usize) -> Option<String> {
    let mut path = String::new();
    if walk_table(table, offset, &mut path) {
        Some(path)
    } else {
        None
    }
}

fn walk_table(table: &DeTable<'_>, offset: usize, path: &mut String) -> bool {
    for (key, value) in table.iter() {
        let key_span = key.span();
        let value_span = value.span();
        let in_key = key_span.start <= offset && offset < key_span.end.max(key_span.start + 1);
        let in_value =
            value_span.start <= offset && offset < value_span.end.max(value_span.start + 1);
        // Tables introduced by `[header]` have a value span covering only the header, so
        // also look inside every child table.
        let mut child = path.clone();
        if !child.is_empty() {
            child.push('.');
        }
        let name = key.get_ref();
        if name.contains('.') || name.is_empty() {
            child.push_str(&format!("\"{name}\""));
        } else {
            child.push_str(name);
        }
        if walk_value(value.get_ref(), offset, &mut child) || in_key || in_value {
            *path = child;
            return true;
        }
    }
    false
}

fn walk_value(value: &DeValue<'_>, offset: usize, path: &mut String) -> bool {
    match value {
        DeValue::Table(t) => walk_table(t, offset, path),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let span = item.span();
                let mut child = format!("{path}[{i}]");
                let inside = span.start <= offset && offset < span.end.max(span.start + 1);
                if walk_value(item.get_ref(), offset, &mut child) || inside {
                    *path = child;
                    return true;
                }
            }
            false
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 99), (1, 3));
    }

    #[test]
    fn key_paths_reach_into_arrays_of_tables() -> Result<(), toml::de::Error> {
        let src = "[scenario]\nname = \"x\"\n[[workload]]\nkind = \"a\"\n[[workload]]\nkind = \"b\"\nn = 1\n";
        let root = DeTable::parse(src)?;
        let offset = src.find("n = 1").unwrap_or(0);
        assert_eq!(
            key_path(root.get_ref(), offset).as_deref(),
            Some("workload[1].n")
        );
        let offset = src.find("\"x\"").unwrap_or(0);
        assert_eq!(
            key_path(root.get_ref(), offset).as_deref(),
            Some("scenario.name")
        );
        Ok(())
    }
}
