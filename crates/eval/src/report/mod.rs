//! Renderers of an evaluation [`Report`]: the terminal table ([`render_text`]), the
//! self-contained HTML page ([`render_html`]) and the JSON file ([`to_json`] / [`from_json`]).
//! Pure functions of the report: they never run probes, read the host or the clock, so the same
//! report always renders to the same bytes.

mod charts;
pub mod html;
pub mod json;
#[doc(hidden)]
pub mod sample;
pub mod text;

pub use html::render_html;
pub use json::{from_json, to_json};
pub use text::render_text;

use crate::model::{ProbeInfo, ProbeResult, Report, Row, Verdict};

/// The probes of row `r` that escaped or could not be decided, with their results: the findings.
pub(crate) fn notable<'a>(report: &'a Report, r: &'a Row) -> Vec<(&'a ProbeInfo, &'a ProbeResult)> {
    report
        .probes
        .iter()
        .filter_map(|p| result_of(r, p).map(|x| (p, x)))
        .filter(|(_, x)| matches!(x.verdict, Verdict::Escaped | Verdict::Inconclusive))
        .collect()
}

/// The result of `probe` in `row`, found by probe id (not by position, so a report whose rows
/// miss a probe still renders).
fn result_of<'a>(row: &'a Row, probe: &ProbeInfo) -> Option<&'a ProbeResult> {
    row.results.iter().find(|r| r.probe == probe.id)
}

/// The probes grouped by category, categories in order of first appearance.
fn probes_by_category(report: &Report) -> Vec<(&str, Vec<&ProbeInfo>)> {
    let mut groups: Vec<(&str, Vec<&ProbeInfo>)> = Vec::new();
    for p in &report.probes {
        match groups.iter_mut().find(|(c, _)| *c == p.category) {
            Some((_, members)) => members.push(p),
            None => groups.push((p.category.as_str(), vec![p])),
        }
    }
    groups
}

/// The one-character cell of a verdict.
fn glyph(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Blocked => "✓",
        Verdict::Escaped => "✗",
        Verdict::NotApplicable => "–",
        Verdict::Inconclusive => "?",
    }
}

/// The verdict as a word, for tooltips and legends.
fn verdict_word(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Blocked => "blocked",
        Verdict::Escaped => "escaped",
        Verdict::NotApplicable => "not applicable",
        Verdict::Inconclusive => "inconclusive",
    }
}

/// "blocked/decided", e.g. "5/5"; "–" when no probe had a verdict.
fn score_cell(row: &Row) -> String {
    let s = row.score();
    let decided = s.blocked + s.escaped;
    if decided == 0 {
        "–".to_owned()
    } else {
        format!("{}/{}", s.blocked, decided)
    }
}

/// Milliseconds with precision that fits the magnitude: 0.512, 3.75, 21.4, 180.
fn fmt_ms(ms: f64) -> String {
    fmt_ms_like(ms, ms)
}

/// `ms` with the precision [`fmt_ms`] gives `like` (a stddev printed like its median).
fn fmt_ms_like(ms: f64, like: f64) -> String {
    let a = like.abs();
    let decimals = if a < 1.0 {
        3
    } else if a < 10.0 {
        2
    } else if a < 100.0 {
        1
    } else {
        0
    };
    format!("{ms:.decimals$}")
}

/// KiB as KiB below 1 MiB, else MiB with one decimal.
fn fmt_kib(kib: u64) -> String {
    if kib < 1024 {
        format!("{kib} KiB")
    } else {
        // Display only: memory sizes are far below f64's exact-integer range.
        format!("{:.1} MiB", kib as f64 / 1024.0)
    }
}

/// Bytes as GiB with one decimal (host memory).
fn fmt_gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1024.0 * 1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers_by_magnitude() {
        assert_eq!(fmt_ms(0.5123), "0.512");
        assert_eq!(fmt_ms(3.754), "3.75");
        assert_eq!(fmt_ms(21.44), "21.4");
        assert_eq!(fmt_ms(180.4), "180");
        assert_eq!(fmt_ms_like(0.54, 2.68), "0.54");
        assert_eq!(fmt_kib(900), "900 KiB");
        assert_eq!(fmt_kib(3276), "3.2 MiB");
        assert_eq!(fmt_gib(4 * 1024 * 1024 * 1024), "4.0 GiB");
    }

    #[test]
    fn groups_probes_by_category_in_order() {
        let report = sample::sample_report();
        let groups = probes_by_category(&report);
        let names: Vec<&str> = groups.iter().map(|(c, _)| *c).collect();
        assert_eq!(names, ["filesystem", "processes", "kernel"]);
        assert!(groups.iter().all(|(_, members)| members.len() == 2));
    }
}
