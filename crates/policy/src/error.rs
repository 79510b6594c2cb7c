//! The one error type of policy validation: it names the field and the offending value.

/// A policy value that cannot be accepted. Displayed as one line naming field and value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} = {value:?}: {reason}")]
pub struct PolicyError {
    /// Dotted path of the field, as written in a policy file (`limits.memory`).
    pub field: String,
    /// The value as the user wrote it.
    pub value: String,
    /// Why it is refused, with a hint where one helps.
    pub reason: String,
}

impl PolicyError {
    pub fn new(
        field: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }

    /// A policy file that does not parse (syntax error, unknown field, wrong type).
    pub fn parse(source: &str, message: impl std::fmt::Display) -> Self {
        let one_line = message
            .to_string()
            .replace('\n', " ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        Self::new("policy", source, one_line)
    }
}
