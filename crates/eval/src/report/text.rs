//! The terminal report: the probe matrix, the benchmark table, the findings and the claims.
//! ANSI colour only when asked; without it the output is plain text (the verdict glyphs ✓ ✗ – ?
//! are the only non-ASCII characters besides ± and ×).

use super::{
    fmt_gib, fmt_kib, fmt_ms, fmt_ms_like, glyph, probes_by_category, result_of, score_cell,
    verdict_word,
};
use crate::model::{Bench, Report, Row, RowKind, Verdict};

/// Matrices wider than this many columns are printed transposed (probes as rows).
const MAX_WIDTH: usize = 120;

const BOLD: &str = "1";
const DIM: &str = "2";
const GREEN: &str = "32";
const RED: &str = "1;31";
const YELLOW: &str = "33";

/// The terminal report of `report`; `color` adds ANSI colours.
pub fn render_text(report: &Report, color: bool) -> String {
    let mut out = String::new();
    let h = &report.host;
    out += &paint(&format!("agentbox eval — {}", h.started), BOLD, color);
    out += "\n";
    out += &format!(
        "host: kernel {}, {} CPUs, {} memory, agentbox {}{}\n\n",
        h.kernel,
        h.cpus,
        fmt_gib(h.memory_bytes),
        h.agentbox_version,
        if h.quick { " (--quick run)" } else { "" }
    );
    render_matrix(&mut out, report, color);
    render_benches(&mut out, report, color);
    render_findings(&mut out, report, color);
    render_claims(&mut out, report, color);
    out
}

#[derive(Clone, Copy)]
enum Align {
    Left,
    Center,
    Right,
}

struct Cell {
    text: String,
    style: Option<&'static str>,
}

fn cell(text: impl Into<String>) -> Cell {
    Cell {
        text: text.into(),
        style: None,
    }
}

fn styled(text: impl Into<String>, style: &'static str) -> Cell {
    Cell {
        text: text.into(),
        style: Some(style),
    }
}

fn width(s: &str) -> usize {
    s.chars().count()
}

fn paint(s: &str, style: &str, color: bool) -> String {
    if color {
        format!("\x1b[{style}m{s}\x1b[0m")
    } else {
        s.to_owned()
    }
}

/// Lays out `rows` under `header` in columns two spaces apart; a row shorter than the header
/// (a group heading) is printed as is. Widths count characters, so colour codes do not shift
/// the columns.
fn render_table(out: &mut String, header: &[(String, Align)], rows: &[Vec<Cell>], color: bool) {
    let mut widths: Vec<usize> = header.iter().map(|(h, _)| width(h)).collect();
    for row in rows.iter().filter(|r| r.len() == header.len()) {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(&c.text));
        }
    }
    let line = |cells: Vec<(String, Option<&str>)>| -> String {
        let mut s = String::new();
        for (i, ((text, style), (&w, (_, align)))) in
            cells.into_iter().zip(widths.iter().zip(header)).enumerate()
        {
            let pad = w.saturating_sub(width(&text));
            let (before, after) = match align {
                Align::Left => (0, pad),
                Align::Right => (pad, 0),
                Align::Center => (pad / 2, pad - pad / 2),
            };
            if i > 0 {
                s += "  ";
            }
            s += &" ".repeat(before);
            s += &match style {
                Some(st) => paint(&text, st, color),
                None => text,
            };
            s += &" ".repeat(after);
        }
        s.trim_end().to_owned() + "\n"
    };
    *out += &line(
        header
            .iter()
            .map(|(h, _)| (h.clone(), Some(BOLD)))
            .collect(),
    );
    for row in rows {
        if row.len() == header.len() {
            *out += &line(row.iter().map(|c| (c.text.clone(), c.style)).collect());
        } else {
            for c in row {
                *out += &match c.style {
                    Some(st) => paint(&c.text, st, color),
                    None => c.text.clone(),
                };
            }
            *out += "\n";
        }
    }
}

fn verdict_cell(row: &Row, verdict: Option<Verdict>) -> Cell {
    match verdict {
        Some(v) => styled(
            glyph(v),
            match v {
                Verdict::Blocked => GREEN,
                Verdict::Escaped => RED,
                Verdict::NotApplicable => DIM,
                Verdict::Inconclusive => YELLOW,
            },
        ),
        // The probe is missing from an available row's results.
        None if row.available => styled("·", DIM),
        None => cell(""),
    }
}

fn row_name(row: &Row) -> String {
    match row.kind {
        RowKind::Tier => row.label.clone(),
        RowKind::Peer => format!("{} (peer)", row.label),
    }
}

fn render_matrix(out: &mut String, report: &Report, color: bool) {
    *out += &paint("Escape probes", BOLD, color);
    *out += "   ✓ blocked  ✗ escaped  – not applicable  ? inconclusive\n";
    let groups = probes_by_category(report);
    let available: Vec<&Row> = report.rows.iter().filter(|r| r.available).collect();
    let label_w = available
        .iter()
        .map(|r| width(&row_name(r)))
        .max()
        .unwrap_or(0);
    let wide = label_w
        + report
            .probes
            .iter()
            .map(|p| 2 + width(&p.id))
            .sum::<usize>()
        + 2
        + width("blocked/decided");
    if wide > MAX_WIDTH {
        // Probes as rows, rows as columns.
        let mut header = vec![("probe".to_owned(), Align::Left)];
        header.extend(available.iter().map(|r| (row_name(r), Align::Center)));
        let mut rows = Vec::new();
        for (category, probes) in &groups {
            rows.push(vec![styled(*category, BOLD)]);
            for p in probes {
                let mut cells = vec![cell(format!("  {}", p.id))];
                cells.extend(
                    available
                        .iter()
                        .map(|r| verdict_cell(r, result_of(r, p).map(|x| x.verdict))),
                );
                rows.push(cells);
            }
        }
        let mut score = vec![styled("score (blocked/decided)", BOLD)];
        score.extend(available.iter().map(|r| styled(score_cell(r), BOLD)));
        rows.push(score);
        render_table(out, &header, &rows, color);
    } else {
        // Rows as rows, probes as columns; the categories on a line above their probes.
        let mut header = vec![("".to_owned(), Align::Left)];
        let mut categories = " ".repeat(label_w);
        for (category, probes) in &groups {
            let span: usize = probes.iter().map(|p| 2 + width(&p.id)).sum();
            categories += &format!("  {:<w$}", category, w = span.saturating_sub(2));
            header.extend(probes.iter().map(|p| (p.id.clone(), Align::Center)));
        }
        header.push(("blocked/decided".to_owned(), Align::Right));
        *out += &paint(categories.trim_end(), DIM, color);
        *out += "\n";
        let mut rows = Vec::new();
        for r in &report.rows {
            let mut cells = vec![cell(row_name(r))];
            if r.available {
                for (_, probes) in &groups {
                    cells.extend(
                        probes
                            .iter()
                            .map(|p| verdict_cell(r, result_of(r, p).map(|x| x.verdict))),
                    );
                }
                cells.push(styled(score_cell(r), BOLD));
                rows.push(cells);
            }
        }
        render_table(out, &header, &rows, color);
    }
    for r in &report.rows {
        let line = match (r.available, r.reason.as_deref()) {
            (false, reason) => format!(
                "not run: {}: {}",
                row_name(r),
                reason.unwrap_or("not available")
            ),
            // An available row whose run went wrong: its cells say inconclusive, this says why.
            (true, Some(reason)) => format!("note: {}: {reason}", row_name(r)),
            (true, None) => continue,
        };
        *out += &paint(&line, DIM, color);
        *out += "\n";
    }
    *out += "\n";
}

fn bench_cells(b: &Bench) -> Vec<Cell> {
    let dash = || cell("–");
    vec![
        b.start_true.as_ref().map_or_else(dash, |s| {
            cell(format!(
                "{} ± {} ms",
                fmt_ms(s.median_ms),
                fmt_ms_like(s.stddev_ms, s.median_ms)
            ))
        }),
        b.start_python
            .as_ref()
            .map_or_else(dash, |s| cell(format!("{} ms", fmt_ms(s.median_ms)))),
        b.exec
            .as_ref()
            .map_or_else(dash, |s| cell(format!("{} ms", fmt_ms(s.median_ms)))),
        b.peak_memory_kib.map_or_else(dash, |k| cell(fmt_kib(k))),
        b.syscall_slowdown
            .map_or_else(dash, |x| cell(format!("{x:.2}×"))),
        b.start_rate_per_s
            .map_or_else(dash, |x| cell(format!("{x:.0}"))),
    ]
}

fn render_benches(out: &mut String, report: &Report, color: bool) {
    *out += &paint("Benchmarks", BOLD, color);
    *out += "   medians; /bin/true ± standard deviation\n";
    let header: Vec<(String, Align)> = [
        ("row", Align::Left),
        ("/bin/true", Align::Right),
        ("python3", Align::Right),
        ("exec", Align::Right),
        ("peak mem", Align::Right),
        ("syscalls", Align::Right),
        ("starts/s", Align::Right),
    ]
    .into_iter()
    .map(|(h, a)| (h.to_owned(), a))
    .collect();
    let rows: Vec<Vec<Cell>> = report
        .rows
        .iter()
        .filter(|r| r.available)
        .map(|r| {
            let mut cells = vec![cell(row_name(r))];
            match &r.bench {
                Some(b) => cells.extend(bench_cells(b)),
                None => cells.extend((0..6).map(|_| cell("–"))),
            }
            cells
        })
        .collect();
    render_table(out, &header, &rows, color);
    *out += "\n";
}

fn render_findings(out: &mut String, report: &Report, color: bool) {
    *out += &paint("Findings", BOLD, color);
    *out += "   escaped and inconclusive probes\n";
    let mut any = false;
    for r in report.rows.iter().filter(|r| r.available) {
        let notable = super::notable(report, r);
        if notable.is_empty() {
            continue;
        }
        any = true;
        let s = r.score();
        *out += &format!(
            "{}: {} escaped, {} inconclusive\n",
            row_name(r),
            s.escaped,
            s.inconclusive
        );
        for (p, x) in notable {
            let style = if x.verdict == Verdict::Escaped {
                RED
            } else {
                YELLOW
            };
            *out += &format!(
                "  {} {} — {} ({})\n",
                paint(glyph(x.verdict), style, color),
                p.id,
                p.title,
                verdict_word(x.verdict)
            );
            *out += &format!("      observed:   {}\n", x.observation);
            *out += &format!("      layer:      {}\n", x.layer.as_deref().unwrap_or("–"));
            *out += &format!("      attempted:  {}\n", x.attempted);
            if let Some(e) = &x.errno {
                *out += &format!("      errno:      {e}\n");
            }
            if let Some(c) = &x.host_check {
                *out += &format!("      host check: {c}\n");
            }
        }
    }
    if !any {
        *out += "  none: every decided probe was blocked in every row\n";
    }
    *out += "\n";
}

fn render_claims(out: &mut String, report: &Report, color: bool) {
    *out += &paint("Claims", BOLD, color);
    *out += "   ✓ holds  ✗ does not hold  ? could not tell here\n";
    for c in &report.claims {
        let (g, style) = match c.holds {
            Some(true) => ("✓", GREEN),
            Some(false) => ("✗", RED),
            None => ("?", YELLOW),
        };
        *out += &format!(
            "  {} {}\n      {}\n",
            paint(g, style, color),
            c.claim,
            c.evidence
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::report::sample::sample_report;

    fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
        text.lines().find(|l| l.contains(needle)).unwrap()
    }

    #[test]
    fn text_matrix_is_transposed_with_glyphs_and_scores() {
        let text = render_text(&sample_report(), false);
        assert!(!text.contains('\x1b'), "no ANSI without colour");
        let header = line_with(&text, "probe ");
        assert!(header.contains("agentbox ns") && header.contains("agentbox chroot"));
        let chroot_break = line_with(&text, "  filesystem.double-chroot-breakout  ");
        assert_eq!(chroot_break.matches('✓').count(), 1, "{chroot_break}");
        assert_eq!(chroot_break.matches('✗').count(), 1, "{chroot_break}");
        let release = line_with(&text, "kernel.cgroup-v1-release-agent");
        assert!(release.contains('–') && release.contains('?'), "{release}");
        let score = line_with(&text, "score (blocked/decided)");
        assert!(score.contains("5/5") && score.contains("3/5"), "{score}");
        assert!(text.contains("not run: bubblewrap (peer): bwrap not found on PATH"));
        for category in ["filesystem", "processes", "kernel"] {
            assert!(text.lines().any(|l| l == category), "category {category}");
        }
    }

    #[test]
    fn text_matrix_is_not_transposed_when_narrow() {
        let mut report = sample_report();
        for (i, p) in report.probes.iter_mut().enumerate() {
            p.id = format!("p{i}");
        }
        for row in &mut report.rows {
            for (i, r) in row.results.iter_mut().enumerate() {
                r.probe = format!("p{i}");
            }
        }
        let text = render_text(&report, false);
        let ns = line_with(&text, "agentbox ns ");
        assert_eq!(ns.matches('✓').count(), 5, "{ns}");
        assert!(ns.contains('–') && ns.trim_end().ends_with("5/5"), "{ns}");
        let chroot = line_with(&text, "agentbox chroot ");
        assert!(chroot.trim_end().ends_with("3/5"), "{chroot}");
        assert!(line_with(&text, "filesystem").contains("processes"));
    }

    #[test]
    fn text_benchmarks_findings_and_claims() {
        let text = render_text(&sample_report(), false);
        let ns = line_with(&text, "3.75 ± 2.30 ms");
        for part in ["21.4 ms", "1.92 ms", "3.2 MiB", "1.18×", "412"] {
            assert!(ns.contains(part), "{part} in {ns}");
        }
        let chroot = line_with(&text, "2.68 ± 0.54 ms");
        assert!(
            chroot.contains("1.2 MiB") && chroot.contains("656"),
            "{chroot}"
        );
        assert!(text.contains("agentbox chroot: 2 escaped, 1 inconclusive"));
        assert!(text.contains("observed:   sentinel <killed> by the probe"));
        assert!(!text.contains("agentbox ns: "), "ns has no findings");
        assert!(text.contains("  ✓ The ns tier blocks"));
        assert!(text.contains("  ✗ The chroot tier starts"));
        assert!(text.contains("  ? agentbox ns starts faster"));
        assert!(text.contains("Median 2.68 ms ± 0.54 ms over 50 runs."));
    }

    #[test]
    fn text_colour_wraps_glyphs_without_shifting_columns() {
        let report = sample_report();
        let plain = render_text(&report, false);
        let coloured = render_text(&report, true);
        assert!(coloured.contains("\x1b[32m✓\x1b[0m") && coloured.contains("\x1b[1;31m✗\x1b[0m"));
        let strip = |s: &str| {
            let mut out = String::new();
            let mut chars = s.chars();
            while let Some(c) = chars.next() {
                if c == '\x1b' {
                    for d in chars.by_ref() {
                        if d == 'm' {
                            break;
                        }
                    }
                } else {
                    out.push(c);
                }
            }
            out
        };
        assert_eq!(strip(&coloured), plain);
    }

    #[test]
    fn text_notes_available_rows_whose_run_failed() {
        let mut report = sample_report();
        report.rows[1].reason = Some("the evaluation failed: cell timed out".to_owned());
        let text = render_text(&report, false);
        assert!(text.contains("note: agentbox chroot: the evaluation failed: cell timed out"));
        let page = crate::report::render_html(&report);
        assert!(page.contains("<li>Note: <strong>agentbox chroot</strong>"));
    }

    #[test]
    fn text_is_deterministic() {
        assert_eq!(
            render_text(&sample_report(), true),
            render_text(&sample_report(), true)
        );
    }
}
