//! The report as one self-contained HTML page: host header, the performance versus security
//! spectrum and the start-latency chart (inline SVG), the probe matrix, the benchmarks, the
//! claims, the findings and each row's posture. No external assets and no script; every text
//! from the report is escaped; floats are printed with fixed precision so the page is
//! deterministic.

use std::fmt::Write as _;

use super::charts::{latency_section, spectrum_section};
use super::{
    fmt_gib, fmt_kib, fmt_ms, fmt_ms_like, glyph, probes_by_category, result_of, score_cell,
    verdict_word,
};
use crate::model::{ProbeResult, Report, Row, RowKind, Stats, Verdict};

/// Text made safe for element content and double- or single-quoted attributes.
pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' => out.push_str("&#10;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
:root { --tier: #2563eb; --peer: #ea580c; --ink: #1f2937; --muted: #6b7280; --line: #e5e7eb; }
* { box-sizing: border-box; }
body { margin: 0; background: #f3f4f6; color: var(--ink);
  font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 20px 40px; }
header h1 { margin: 0 0 2px; font-size: 26px; }
header p { margin: 0 0 14px; color: var(--muted); }
.host { display: flex; flex-wrap: wrap; gap: 8px 28px; margin: 0; }
.host div { display: flex; flex-direction: column; }
.host dt { font-size: 11px; text-transform: uppercase; letter-spacing: .05em; color: var(--muted); }
.host dd { margin: 0; font-weight: 600; }
section { background: #fff; border: 1px solid var(--line); border-radius: 10px;
  padding: 16px 20px; margin-top: 18px; box-shadow: 0 1px 2px rgba(0,0,0,.04); }
h2 { font-size: 17px; margin: 0 0 4px; }
.note { color: var(--muted); margin: 4px 0 10px; font-size: 13px; }
svg { display: block; width: 100%; height: auto; font-family: inherit; }
svg text { fill: var(--ink); font-size: 13px; }
svg .axis text, svg .tick { fill: var(--muted); font-size: 12px; }
svg .grid { stroke: #eef0f3; }
svg .grid.major { stroke: #dfe3e8; }
svg .frame { stroke: #9ca3af; fill: none; }
svg .hint { fill: #9ca3af; font-size: 12px; font-style: italic; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
thead th { font-size: 12px; color: var(--muted); letter-spacing: .02em;
  border-bottom: 2px solid var(--line); }
td.num, th.num { text-align: right; }
tbody td:first-child { white-space: nowrap; }
.kind { display: inline-block; font-size: 11px; padding: 0 6px; border-radius: 8px; margin-left: 6px;
  color: #fff; vertical-align: 1px; }
.kind.tier { background: var(--tier); }
.kind.peer { background: var(--peer); }
#probe-matrix th.rowhead { text-align: center; min-width: 130px; text-transform: none; font-size: 13px;
  color: var(--ink); letter-spacing: 0; }
#probe-matrix tr.cat th { background: #f9fafb; font-size: 12px; text-transform: uppercase;
  letter-spacing: .05em; color: var(--muted); padding-top: 8px; }
#probe-matrix td.v { text-align: center; vertical-align: middle; font-weight: 700; font-size: 16px;
  cursor: help; }
#probe-matrix .id { display: block; color: var(--muted); font-size: 12px;
  font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
.blocked { background: #dcfce7; color: #15803d; }
.escaped { background: #fee2e2; color: #b91c1c; }
.na { background: #f3f4f6; color: #9ca3af; }
.inconclusive { background: #fef3c7; color: #b45309; }
tfoot td, tfoot th { border-bottom: none; border-top: 2px solid var(--line); font-weight: 700; }
.legend span { margin-right: 14px; white-space: nowrap; }
.legend b { display: inline-block; width: 22px; text-align: center; border-radius: 4px; margin-right: 4px; }
.unavailable { color: var(--muted); margin: 10px 0 0; padding-left: 18px; }
.badge { display: inline-block; min-width: 28px; text-align: center; font-weight: 700; border-radius: 6px;
  padding: 1px 6px; margin-right: 10px; }
.badge.holds { background: #dcfce7; color: #15803d; }
.badge.fails { background: #fee2e2; color: #b91c1c; }
.badge.unknown { background: #fef3c7; color: #b45309; }
ul.claims { list-style: none; padding: 0; margin: 6px 0 0; }
ul.claims li { padding: 8px 0; border-bottom: 1px solid var(--line); }
ul.claims li:last-child { border-bottom: none; }
ul.claims p { margin: 2px 0 0 48px; color: var(--muted); }
.finding { border-left: 4px solid #b91c1c; background: #fef2f2; padding: 8px 12px; margin: 8px 0;
  border-radius: 0 6px 6px 0; }
.finding.undecided { border-left-color: #d97706; background: #fffbeb; }
.finding h4 { margin: 0 0 4px; font-size: 14px; }
.finding dl { display: grid; grid-template-columns: 110px 1fr; gap: 2px 10px; margin: 0; font-size: 13px; }
.finding dt { color: var(--muted); }
.finding dd { margin: 0; }
code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; }
h3 { font-size: 15px; margin: 14px 0 4px; }
footer { color: var(--muted); font-size: 12px; margin-top: 18px; text-align: center; }
"#;

/// The report as one HTML page.
pub fn render_html(report: &Report) -> String {
    let h = &report.host;
    let mut out = String::new();
    out += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
    out += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
    let _ = writeln!(
        out,
        "<title>agentbox eval — {}</title>",
        html_escape(&h.started)
    );
    let _ = writeln!(out, "<style>{STYLE}</style>\n</head>\n<body>\n<main>");
    out += "<header>\n<h1>agentbox eval</h1>\n<p>Escape probes and benchmarks across agentbox's \
            isolation tiers and the peer tools installed on this host; verdicts decided on the \
            host side.</p>\n<dl class=\"host\">\n";
    let run = if h.quick { "quick (--quick)" } else { "full" };
    for (k, v) in [
        ("started", h.started.clone()),
        ("kernel", h.kernel.clone()),
        ("CPUs", h.cpus.to_string()),
        ("memory", fmt_gib(h.memory_bytes)),
        ("agentbox", h.agentbox_version.clone()),
        ("run", run.to_owned()),
        ("probes", report.probes.len().to_string()),
        ("schema", report.schema.to_string()),
    ] {
        let _ = writeln!(out, "<div><dt>{k}</dt><dd>{}</dd></div>", html_escape(&v));
    }
    out += "</dl>\n</header>\n";
    spectrum_section(&mut out, report);
    latency_section(&mut out, report);
    matrix_section(&mut out, report);
    bench_section(&mut out, report);
    claims_section(&mut out, report);
    findings_section(&mut out, report);
    posture_section(&mut out, report);
    let _ = writeln!(
        out,
        "<footer>agentbox {} · report schema {} · generated from the run started {}</footer>",
        html_escape(&h.agentbox_version),
        report.schema,
        html_escape(&h.started)
    );
    out += "</main>\n</body>\n</html>\n";
    out
}

fn kind_badge(row: &Row) -> &'static str {
    match row.kind {
        RowKind::Tier => "<span class=\"kind tier\">tier</span>",
        RowKind::Peer => "<span class=\"kind peer\">peer</span>",
    }
}

/// The largest of 1, 2, 5 × 10^k not above `v` (v > 0).
fn cell_title(r: &ProbeResult) -> String {
    let mut t = format!("{}: {}", verdict_word(r.verdict), r.observation);
    if let Some(e) = &r.errno {
        let _ = write!(t, "\nerrno: {e}");
    }
    if let Some(l) = &r.layer {
        let _ = write!(t, "\nlayer: {l}");
    }
    let _ = write!(t, "\nattempted: {}", r.attempted);
    if let Some(c) = &r.host_check {
        let _ = write!(t, "\nhost check: {c}");
    }
    t
}

fn verdict_class(v: Verdict) -> &'static str {
    match v {
        Verdict::Blocked => "blocked",
        Verdict::Escaped => "escaped",
        Verdict::NotApplicable => "na",
        Verdict::Inconclusive => "inconclusive",
    }
}

fn matrix_section(out: &mut String, report: &Report) {
    let available: Vec<&Row> = report.rows.iter().filter(|r| r.available).collect();
    *out += "<section>\n<h2>Escape probes</h2>\n<p class=\"note legend\">";
    for v in [
        Verdict::Blocked,
        Verdict::Escaped,
        Verdict::NotApplicable,
        Verdict::Inconclusive,
    ] {
        let _ = write!(
            out,
            "<span><b class=\"{0}\">{1}</b>{2}</span>",
            verdict_class(v),
            glyph(v),
            verdict_word(v)
        );
    }
    *out += " Hover a cell for what was observed.</p>\n";
    *out += "<table id=\"probe-matrix\">\n<thead><tr><th>probe</th>";
    for r in &available {
        let _ = write!(
            out,
            "<th class=\"rowhead\">{}{}</th>",
            html_escape(&r.label),
            kind_badge(r)
        );
    }
    *out += "</tr></thead>\n<tbody>\n";
    for (category, probes) in probes_by_category(report) {
        let _ = writeln!(
            out,
            "<tr class=\"cat\"><th colspan=\"{}\">{}</th></tr>",
            available.len() + 1,
            html_escape(category)
        );
        for p in probes {
            let _ = write!(
                out,
                "<tr><td>{}<span class=\"id\">{}</span></td>",
                html_escape(&p.title),
                html_escape(&p.id)
            );
            for r in &available {
                match result_of(r, p) {
                    Some(x) => {
                        let _ = write!(
                            out,
                            "<td class=\"v {}\" title=\"{}\">{}</td>",
                            verdict_class(x.verdict),
                            html_escape(&cell_title(x)),
                            glyph(x.verdict)
                        );
                    }
                    None => out.push_str("<td class=\"v na\" title=\"not run\">·</td>"),
                }
            }
            *out += "</tr>\n";
        }
    }
    *out += "</tbody>\n<tfoot><tr><th>blocked / decided</th>";
    for r in &available {
        let _ = write!(
            out,
            "<td class=\"num\" style=\"text-align:center\">{}</td>",
            score_cell(r)
        );
    }
    *out += "</tr></tfoot>\n</table>\n";
    // Rows not run, and available rows whose run went wrong (their cells say why they are
    // inconclusive).
    let notes: Vec<&Row> = report
        .rows
        .iter()
        .filter(|r| !r.available || r.reason.is_some())
        .collect();
    if !notes.is_empty() {
        *out += "<ul class=\"unavailable\">\n";
        for r in notes {
            let _ = writeln!(
                out,
                "<li>{}: <strong>{}</strong>{} — {}</li>",
                if r.available { "Note" } else { "Not run" },
                html_escape(&r.label),
                kind_badge(r),
                html_escape(r.reason.as_deref().unwrap_or("not available"))
            );
        }
        *out += "</ul>\n";
    }
    *out += "</section>\n";
}

fn stats_cell(s: Option<&Stats>, with_stddev: bool) -> String {
    match s {
        Some(s) if with_stddev => format!(
            "<td class=\"num\" title=\"{} runs, min {} ms, max {} ms\">{} ± {} ms</td>",
            s.runs,
            fmt_ms(s.min_ms),
            fmt_ms(s.max_ms),
            fmt_ms(s.median_ms),
            fmt_ms_like(s.stddev_ms, s.median_ms)
        ),
        Some(s) => format!("<td class=\"num\">{} ms</td>", fmt_ms(s.median_ms)),
        None => "<td class=\"num\">–</td>".to_owned(),
    }
}

fn bench_section(out: &mut String, report: &Report) {
    *out += "<section>\n<h2>Benchmarks</h2>\n<p class=\"note\">Medians; <code>/bin/true</code> and \
            <code>python3 -c pass</code> with ± one standard deviation. Peak memory is the sandbox \
            machinery's, not the command's.</p>\n<table id=\"bench-table\">\n<thead><tr><th>row</th>\
            <th class=\"num\">/bin/true</th><th class=\"num\">python3</th><th class=\"num\">exec</th>\
            <th class=\"num\">peak memory</th><th class=\"num\">syscall slowdown</th>\
            <th class=\"num\">starts / s</th></tr></thead>\n<tbody>\n";
    for r in report.rows.iter().filter(|r| r.available) {
        let _ = write!(
            out,
            "<tr><td>{}{}</td>",
            html_escape(&r.label),
            kind_badge(r)
        );
        match &r.bench {
            Some(b) => {
                out.push_str(&stats_cell(b.start_true.as_ref(), true));
                out.push_str(&stats_cell(b.start_python.as_ref(), true));
                out.push_str(&stats_cell(b.exec.as_ref(), false));
                let opt = |v: Option<String>| {
                    format!(
                        "<td class=\"num\">{}</td>",
                        v.unwrap_or_else(|| "–".to_owned())
                    )
                };
                out.push_str(&opt(b.peak_memory_kib.map(fmt_kib)));
                out.push_str(&opt(b.syscall_slowdown.map(|x| format!("{x:.2}×"))));
                out.push_str(&opt(b.start_rate_per_s.map(|x| format!("{x:.0}"))));
            }
            None => out.push_str("<td class=\"num\" colspan=\"6\">not benchmarked</td>"),
        }
        *out += "</tr>\n";
    }
    *out += "</tbody>\n</table>\n</section>\n";
}

fn claims_section(out: &mut String, report: &Report) {
    *out += "<section>\n<h2>Claims</h2>\n<ul class=\"claims\">\n";
    for c in &report.claims {
        let (class, g, word) = match c.holds {
            Some(true) => ("holds", "✓", "holds"),
            Some(false) => ("fails", "✗", "does not hold"),
            None => ("unknown", "?", "could not tell on this host"),
        };
        let _ = writeln!(
            out,
            "<li><span class=\"badge {class}\" title=\"{word}\">{g}</span>{}<p>{}</p></li>",
            html_escape(&c.claim),
            html_escape(&c.evidence)
        );
    }
    if report.claims.is_empty() {
        *out += "<li>No claims were evaluated.</li>\n";
    }
    *out += "</ul>\n</section>\n";
}

fn findings_section(out: &mut String, report: &Report) {
    *out += "<section>\n<h2>Findings</h2>\n<p class=\"note\">Probes that escaped or could not be \
            decided, per row.</p>\n";
    let mut any = false;
    for r in report.rows.iter().filter(|r| r.available) {
        let notable = super::notable(report, r);
        if notable.is_empty() {
            continue;
        }
        any = true;
        let _ = writeln!(out, "<h3>{}{}</h3>", html_escape(&r.label), kind_badge(r));
        for (p, x) in notable {
            let class = if x.verdict == Verdict::Escaped {
                "finding"
            } else {
                "finding undecided"
            };
            let _ = write!(
                out,
                "<div class=\"{class}\"><h4>{} {} <code>{}</code></h4><dl>\
                 <dt>observed</dt><dd>{}</dd><dt>layer</dt><dd>{}</dd>\
                 <dt>attempted</dt><dd><code>{}</code></dd>",
                glyph(x.verdict),
                html_escape(&p.title),
                html_escape(&p.id),
                html_escape(&x.observation),
                html_escape(x.layer.as_deref().unwrap_or("–")),
                html_escape(&x.attempted)
            );
            if let Some(e) = &x.errno {
                let _ = write!(
                    out,
                    "<dt>errno</dt><dd><code>{}</code></dd>",
                    html_escape(e)
                );
            }
            if let Some(c) = &x.host_check {
                let _ = write!(out, "<dt>host check</dt><dd>{}</dd>", html_escape(c));
            }
            *out += "</dl></div>\n";
        }
    }
    if !any {
        *out += "<p>None: every decided probe was blocked in every row.</p>\n";
    }
    *out += "</section>\n";
}

fn posture_section(out: &mut String, report: &Report) {
    let rows: Vec<&Row> = report.rows.iter().filter(|r| r.posture.is_some()).collect();
    if rows.is_empty() {
        return;
    }
    *out += "<section>\n<h2>Posture</h2>\n<p class=\"note\">The sandboxed process as the host saw it \
            in /proc while the probes ran.</p>\n<table id=\"posture-table\">\n<thead><tr><th>row</th>\
            <th>own namespaces</th><th>shared with host</th><th>CapEff</th><th>CapBnd</th>\
            <th>no_new_privs</th><th>seccomp</th><th class=\"num\">host uid</th><th>cgroup</th>\
            <th>extra fds</th></tr></thead>\n<tbody>\n";
    for r in rows {
        let Some(p) = &r.posture else { continue };
        let join = |v: &[String]| {
            if v.is_empty() {
                "–".to_owned()
            } else {
                html_escape(&v.join(", "))
            }
        };
        let seccomp = match p.seccomp {
            0 => "none",
            1 => "strict",
            _ => "filter",
        };
        let _ = writeln!(
            out,
            "<tr><td>{}{}{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td><code>{}</code></td>\
             <td>{}</td><td>{seccomp}</td><td class=\"num\">{}</td><td><code>{}</code></td><td>{}</td></tr>",
            html_escape(&r.label),
            kind_badge(r),
            p.note
                .as_deref()
                .map(|n| format!("<br><small>{}</small>", html_escape(n)))
                .unwrap_or_default(),
            join(&p.own_namespaces),
            join(&p.shared_namespaces),
            html_escape(&p.cap_eff),
            html_escape(&p.cap_bnd),
            if p.no_new_privs { "yes" } else { "no" },
            p.host_uid,
            join(&p.cgroup),
            join(&p.extra_fds)
        );
    }
    *out += "</tbody>\n</table>\n</section>\n";
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::charts::{ceil_125, floor_125, fmt_tick};
    use super::*;
    use crate::report::sample::sample_report;

    #[test]
    fn html_escape_escapes_markup_and_quotes() {
        assert_eq!(
            html_escape("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn html_has_charts_matrix_and_escaped_text() {
        let page = render_html(&sample_report());
        for id in [
            "id=\"spectrum-chart\"",
            "id=\"latency-chart\"",
            "id=\"probe-matrix\"",
        ] {
            assert_eq!(page.matches(id).count(), 1, "{id}");
        }
        let spectrum = page
            .split("id=\"spectrum-chart\"")
            .nth(1)
            .unwrap()
            .split("</svg>")
            .next()
            .unwrap();
        assert_eq!(
            spectrum.matches("<circle").count(),
            2 + 2,
            "two rows plotted, two in the legend"
        );
        assert!(spectrum.contains("fill=\"var(--tier)\""));
        assert!(page.contains("sentinel &lt;killed&gt; by the probe"));
        assert!(!page.contains("<killed>"));
        assert!(page.contains("<td class=\"v escaped\" title=\"escaped: read /etc/hostname"));
        assert!(page.contains("Not run: <strong>bubblewrap</strong>"));
        assert!(page.contains("bwrap not found on PATH"));
        assert!(page.contains(">5/5<") && page.contains(">3/5<"));
        // Self-contained: no script, no external asset; the only URLs are the SVG namespaces.
        for external in ["<script", "<link", "src=", "url(", "@import"] {
            assert!(!page.contains(external), "{external}");
        }
        assert_eq!(page.matches("http").count(), 2);
    }

    #[test]
    fn html_is_deterministic() {
        assert_eq!(render_html(&sample_report()), render_html(&sample_report()));
    }

    #[test]
    fn spectrum_log_axis_bounds() {
        assert_eq!(floor_125(2.14), 2.0);
        assert_eq!(floor_125(0.7), 0.5);
        assert_eq!(ceil_125(4.69), 5.0);
        assert_eq!(ceil_125(120.0), 200.0);
        assert_eq!(fmt_tick(0.5), "0.5");
        assert_eq!(fmt_tick(20.0), "20");
    }

    #[test]
    fn spectrum_hollow_peers_and_unplotted_rows() {
        let mut report = sample_report();
        report.rows[2].available = true;
        report.rows[2].results = report.rows[0].results.clone();
        report.rows[2].bench = report.rows[0].bench.clone();
        report.rows[1].bench = None;
        let page = render_html(&report);
        assert!(page.contains("fill=\"#fff\" stroke=\"var(--peer)\""));
        assert!(page.contains("Not plotted: agentbox chroot (no /bin/true start benchmark)."));
    }
}
