//! The report as JSON (`agentbox eval --json FILE`), schema in docs/eval.md. Reading checks the
//! schema version so an old or newer file is refused with a message instead of misread.

use crate::model::{Report, SCHEMA_VERSION};

/// The report as pretty-printed JSON. Field order is the model's declaration order, so the output
/// is deterministic.
pub fn to_json(report: &Report) -> String {
    match serde_json::to_string_pretty(report) {
        Ok(text) => text,
        // The model has only string keys and plain values, so serialisation cannot fail; keep the
        // output valid JSON if that ever changes.
        Err(e) => serde_json::json!({ "error": e.to_string() }).to_string(),
    }
}

/// Parses a report written by [`to_json`], refusing other schema versions.
pub fn from_json(text: &str) -> Result<Report, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    match value.get("schema").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(SCHEMA_VERSION) => {}
        Some(v) => {
            return Err(format!(
            "unsupported report schema version {v} (this agentbox reads version {SCHEMA_VERSION})"
        ))
        }
        None => return Err("not an agentbox eval report: no numeric \"schema\" field".to_owned()),
    }
    serde_json::from_value(value).map_err(|e| format!("invalid report: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::report::sample::sample_report;

    #[test]
    fn json_round_trips_the_sample() {
        let report = sample_report();
        let text = to_json(&report);
        assert_eq!(from_json(&text).unwrap(), report);
        assert!(
            text.contains("\n  \"schema\": 1,"),
            "pretty, schema first:\n{text}"
        );
        assert!(text.contains("\"verdict\": \"not_applicable\""));
        assert!(text.contains("\"kind\": \"peer\""));
    }

    #[test]
    fn json_refuses_other_schema_versions() {
        let text = to_json(&sample_report()).replacen("\"schema\": 1", "\"schema\": 2", 1);
        let err = from_json(&text).unwrap_err();
        assert!(err.contains("schema version 2"), "{err}");
        assert!(from_json("{}")
            .unwrap_err()
            .contains("no numeric \"schema\""));
        assert!(from_json("nope").unwrap_err().starts_with("not JSON"));
    }

    #[test]
    fn json_reports_missing_fields() {
        let err = from_json("{\"schema\": 1}").unwrap_err();
        assert!(err.starts_with("invalid report"), "{err}");
    }
}
