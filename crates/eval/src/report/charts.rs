//! The two SVG charts of the HTML report: the performance-versus-security spectrum (start latency
//! on a log scale against the share of probes blocked) and the start-latency bars.

use std::fmt::Write as _;

use super::html::html_escape;
use super::{fmt_ms, fmt_ms_like};
use crate::model::{Report, Row, RowKind, Stats};

pub(super) fn floor_125(v: f64) -> f64 {
    let base = 10f64.powf(v.log10().floor());
    [5.0, 2.0, 1.0]
        .into_iter()
        .map(|m| m * base)
        .find(|&x| x <= v * (1.0 + 1e-9))
        .unwrap_or(base)
}

/// The smallest of 1, 2, 5 × 10^k not below `v` (v > 0).
pub(super) fn ceil_125(v: f64) -> f64 {
    let base = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * base)
        .find(|&x| x >= v * (1.0 - 1e-9))
        .unwrap_or(10.0 * base)
}

pub(super) fn fmt_tick(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        let decimals = (-v.log10().floor()).max(0.0) as usize;
        format!("{v:.decimals$}")
    }
}

/// A box in SVG coordinates, for keeping labels apart.
struct Rect {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

impl Rect {
    fn overlaps(&self, o: &Rect) -> bool {
        self.x < o.x + o.w && o.x < self.x + self.w && self.y < o.y + o.h && o.y < self.y + self.h
    }
}

struct SpectrumPoint<'a> {
    row: &'a Row,
    median_ms: f64,
    fraction: f64,
    blocked: u32,
    decided: u32,
}

/// The available rows that can be plotted, and the others with why not.
fn spectrum_points(report: &Report) -> (Vec<SpectrumPoint<'_>>, Vec<(&Row, &'static str)>) {
    let mut points = Vec::new();
    let mut skipped = Vec::new();
    for row in report.rows.iter().filter(|r| r.available) {
        let median = row
            .bench
            .as_ref()
            .and_then(|b| b.start_true.as_ref())
            .map(|s| s.median_ms);
        let score = row.score();
        match (median, score.blocked_fraction()) {
            (Some(m), Some(f)) if m > 0.0 => points.push(SpectrumPoint {
                row,
                median_ms: m,
                fraction: f,
                blocked: score.blocked,
                decided: score.blocked + score.escaped,
            }),
            (Some(m), Some(_)) if m <= 0.0 => skipped.push((row, "no positive start latency")),
            (None, _) => skipped.push((row, "no /bin/true start benchmark")),
            _ => skipped.push((row, "no probe had a verdict")),
        }
    }
    (points, skipped)
}

pub(super) fn spectrum_section(out: &mut String, report: &Report) {
    const W: f64 = 1100.0;
    const H: f64 = 460.0;
    const L: f64 = 78.0;
    const R: f64 = 30.0;
    const T: f64 = 24.0;
    const B: f64 = 62.0;
    let (pw, ph) = (W - L - R, H - T - B);
    let (points, skipped) = spectrum_points(report);
    let min = points
        .iter()
        .map(|p| p.median_ms)
        .fold(f64::INFINITY, f64::min);
    let max = points.iter().map(|p| p.median_ms).fold(0.0, f64::max);
    let (lo, hi) = if points.is_empty() {
        (1.0, 10.0)
    } else {
        let lo = floor_125(min / 1.25);
        let hi = ceil_125(max * 1.25);
        if hi > lo {
            (lo, hi)
        } else {
            (lo, lo * 10.0)
        }
    };
    let x = |v: f64| L + (v.log10() - lo.log10()) / (hi.log10() - lo.log10()) * pw;
    // Inset so that points at 0 % or 100 % do not sit on the frame.
    let y = |f: f64| T + 14.0 + (1.0 - f) * (ph - 28.0);

    *out += "<section>\n<h2>The performance versus security spectrum</h2>\n";
    *out += "<p class=\"note\">Each available row: start latency of <code>/bin/true</code> (median, log \
            scale) against the share of decided probes it blocked. Up and to the left is better. \
            Filled: agentbox tiers; hollow: peer tools.</p>\n";
    let _ = writeln!(
        out,
        "<svg id=\"spectrum-chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
         viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"start latency versus share of probes blocked\">"
    );
    // Grid and ticks.
    *out += "<g class=\"axis\">\n";
    let mut ticks = Vec::new();
    let (k0, k1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    for k in k0..=k1 {
        for m in 1..=9 {
            let t = f64::from(m) * 10f64.powi(k);
            if t >= lo * (1.0 - 1e-9) && t <= hi * (1.0 + 1e-9) {
                ticks.push((t, m));
            }
        }
    }
    let label_all = ticks.len() <= 8;
    for &(t, m) in &ticks {
        let major = label_all || matches!(m, 1 | 2 | 5);
        let tx = x(t);
        let class = if major { "grid major" } else { "grid" };
        let _ = writeln!(
            out,
            "<line class=\"{class}\" x1=\"{tx:.1}\" y1=\"{T}\" x2=\"{tx:.1}\" y2=\"{:.1}\"/>",
            T + ph
        );
        if major {
            let _ = writeln!(
                out,
                "<text class=\"tick\" x=\"{tx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                T + ph + 18.0,
                fmt_tick(t)
            );
        }
    }
    for i in 0..=5 {
        let f = f64::from(i) / 5.0;
        let ty = y(f);
        let _ = writeln!(
            out,
            "<line class=\"grid major\" x1=\"{L}\" y1=\"{ty:.1}\" x2=\"{:.1}\" y2=\"{ty:.1}\"/>",
            L + pw
        );
        let _ = writeln!(
            out,
            "<text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}%</text>",
            L - 8.0,
            ty + 4.0,
            i * 20
        );
    }
    let _ = writeln!(
        out,
        "<rect class=\"frame\" x=\"{L}\" y=\"{T}\" width=\"{pw}\" height=\"{ph}\"/>"
    );
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">start latency of /bin/true, median (ms, log scale) →</text>",
        L + pw / 2.0,
        H - 14.0
    );
    let _ = writeln!(
        out,
        "<text transform=\"translate(20 {:.1}) rotate(-90)\" text-anchor=\"middle\">probes blocked (% of decided) →</text>",
        T + ph / 2.0
    );
    *out += "</g>\n";
    let _ = writeln!(
        out,
        "<text class=\"hint\" x=\"{:.1}\" y=\"{:.1}\">↖ faster and more secure</text>",
        L + 10.0,
        T + 18.0
    );
    // Legend, above the plot on the right.
    let (gx, gy) = (L + pw - 190.0, T - 10.0);
    let _ = writeln!(
        out,
        "<circle cx=\"{gx:.1}\" cy=\"{gy:.1}\" r=\"5\" fill=\"var(--tier)\"/>\
         <text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\">agentbox tier</text>\
         <circle cx=\"{:.1}\" cy=\"{gy:.1}\" r=\"5\" fill=\"#fff\" stroke=\"var(--peer)\" stroke-width=\"2\"/>\
         <text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\">peer tool</text>",
        gx + 10.0,
        gy + 4.0,
        gx + 110.0,
        gx + 120.0,
        gy + 4.0
    );
    if points.is_empty() {
        let _ = writeln!(out, "<text class=\"hint\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">no row to plot</text>", L + pw / 2.0, T + ph / 2.0);
    }
    // Peers first so that a tier drawn over a peer at the same spot leaves its ring visible.
    let mut order: Vec<&SpectrumPoint<'_>> = points.iter().collect();
    order.sort_by_key(|p| p.row.kind == RowKind::Tier);
    let at = |p: &SpectrumPoint<'_>| (x(p.median_ms), y(p.fraction));
    for p in &order {
        let (px, py) = at(p);
        let (fill, opacity, stroke) = match p.row.kind {
            RowKind::Tier => ("var(--tier)", "0.85", "var(--tier)"),
            RowKind::Peer => ("#fff", "1", "var(--peer)"),
        };
        let _ = writeln!(
            out,
            "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"7\" fill=\"{fill}\" fill-opacity=\"{opacity}\" \
             stroke=\"{stroke}\" stroke-width=\"2.5\"><title>{}: {} ms, {}/{} blocked</title></circle>",
            html_escape(&p.row.label),
            fmt_ms(p.median_ms),
            p.blocked,
            p.decided
        );
    }
    // Labels: the first of a few spots around the point that is inside the plot and clear of
    // every point and every label placed so far.
    let mut taken: Vec<Rect> = points
        .iter()
        .map(|p| {
            let (px, py) = at(p);
            Rect {
                x: px - 9.0,
                y: py - 9.0,
                w: 18.0,
                h: 18.0,
            }
        })
        .collect();
    taken.push(Rect {
        x: L + 8.0,
        y: T + 6.0,
        w: 170.0,
        h: 15.0,
    }); // the hint
    for p in &points {
        let (px, py) = at(p);
        let text = format!("{} · {}/{}", p.row.label, p.blocked, p.decided);
        let tw = 7.6 * text.chars().count() as f64;
        let spots = [
            (px + 12.0, py + 4.0),
            (px - 12.0 - tw, py + 4.0),
            (px - tw / 2.0, py - 14.0),
            (px - tw / 2.0, py + 24.0),
            (px + 8.0, py - 14.0),
            (px + 8.0, py + 24.0),
            (px - 8.0 - tw, py - 14.0),
            (px - 8.0 - tw, py + 24.0),
        ];
        let fits = |&(lx, ly): &(f64, f64)| {
            let r = Rect {
                x: lx,
                y: ly - 12.0,
                w: tw,
                h: 15.0,
            };
            r.x >= L + 2.0
                && r.x + r.w <= L + pw - 2.0
                && r.y >= T
                && r.y + r.h <= T + ph
                && !taken.iter().any(|o| o.overlaps(&r))
        };
        let (lx, ly) = spots.iter().copied().find(|s| fits(s)).unwrap_or(spots[0]);
        taken.push(Rect {
            x: lx,
            y: ly - 12.0,
            w: tw,
            h: 15.0,
        });
        let _ = writeln!(
            out,
            "<text x=\"{lx:.1}\" y=\"{ly:.1}\" font-weight=\"600\">{}</text>",
            html_escape(&text)
        );
    }
    *out += "</svg>\n";
    if !skipped.is_empty() {
        let list: Vec<String> = skipped
            .iter()
            .map(|(r, why)| format!("{} ({why})", html_escape(&r.label)))
            .collect();
        let _ = writeln!(
            out,
            "<p class=\"note\">Not plotted: {}.</p>",
            list.join("; ")
        );
    }
    *out += "</section>\n";
}

pub(super) fn latency_section(out: &mut String, report: &Report) {
    let bars: Vec<(&Row, &Stats)> = report
        .rows
        .iter()
        .filter(|r| r.available)
        .filter_map(|r| {
            r.bench
                .as_ref()
                .and_then(|b| b.start_true.as_ref())
                .map(|s| (r, s))
        })
        .collect();
    let label_chars = bars
        .iter()
        .map(|(r, _)| r.label.chars().count())
        .max()
        .unwrap_or(0);
    let l = (label_chars as f64 * 7.5 + 24.0).clamp(120.0, 320.0);
    let (w, r_margin, t, row_h) = (1100.0, 160.0, 16.0, 36.0);
    let h = t + row_h * bars.len().max(1) as f64 + 50.0;
    let pw = w - l - r_margin;
    let max = bars
        .iter()
        .map(|(_, s)| s.median_ms + s.stddev_ms)
        .fold(0.0, f64::max);
    let step = if max > 0.0 { ceil_125(max / 5.0) } else { 1.0 };
    let top = (max / step).ceil().max(1.0) * step;
    let x = |v: f64| l + v.max(0.0) / top * pw;

    *out += "<section>\n<h2>Start latency</h2>\n";
    *out += "<p class=\"note\">Start to exit of <code>/bin/true</code>: median, whiskers ± one standard \
            deviation.</p>\n";
    let _ = writeln!(
        out,
        "<svg id=\"latency-chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"start latency per row\">"
    );
    let bottom = t + row_h * bars.len().max(1) as f64;
    *out += "<g class=\"axis\">\n";
    let n = (top / step).round() as u32;
    for i in 0..=n {
        let v = f64::from(i) * step;
        let tx = x(v);
        let _ = writeln!(out, "<line class=\"grid major\" x1=\"{tx:.1}\" y1=\"{t}\" x2=\"{tx:.1}\" y2=\"{bottom:.1}\"/>");
        let _ = writeln!(
            out,
            "<text class=\"tick\" x=\"{tx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            bottom + 18.0,
            fmt_tick_linear(v, step)
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">ms</text>",
        l + pw / 2.0,
        bottom + 40.0
    );
    *out += "</g>\n";
    for (i, (row, s)) in bars.iter().enumerate() {
        let cy = t + row_h * i as f64 + row_h / 2.0;
        let color = match row.kind {
            RowKind::Tier => "var(--tier)",
            RowKind::Peer => "var(--peer)",
        };
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            l - 10.0,
            cy + 4.0,
            html_escape(&row.label)
        );
        let _ = writeln!(
            out,
            "<rect x=\"{l:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"20\" rx=\"3\" fill=\"{color}\" fill-opacity=\"0.8\">\
             <title>{}: median {} ms, mean {} ms, σ {} ms, {} runs</title></rect>",
            cy - 10.0,
            x(s.median_ms) - l,
            html_escape(&row.label),
            fmt_ms(s.median_ms),
            fmt_ms(s.mean_ms),
            fmt_ms_like(s.stddev_ms, s.median_ms),
            s.runs
        );
        let (x0, x1) = (x(s.median_ms - s.stddev_ms), x(s.median_ms + s.stddev_ms));
        let _ = writeln!(
            out,
            "<path d=\"M{x0:.1} {cy:.1}H{x1:.1}M{x0:.1} {:.1}V{:.1}M{x1:.1} {:.1}V{:.1}\" stroke=\"#374151\" stroke-width=\"1.5\" fill=\"none\"/>",
            cy - 6.0,
            cy + 6.0,
            cy - 6.0,
            cy + 6.0
        );
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\">{} ms ± {}</text>",
            x1.max(x(s.median_ms)) + 8.0,
            cy + 4.0,
            fmt_ms(s.median_ms),
            fmt_ms_like(s.stddev_ms, s.median_ms)
        );
    }
    if bars.is_empty() {
        let _ = writeln!(
            out,
            "<text class=\"hint\" x=\"{:.1}\" y=\"{:.1}\">no start benchmark in this run</text>",
            l + 10.0,
            t + 22.0
        );
    }
    *out += "</svg>\n</section>\n";
}

fn fmt_tick_linear(v: f64, step: f64) -> String {
    if step >= 1.0 {
        format!("{v:.0}")
    } else {
        let decimals = (-step.log10().floor()).max(0.0) as usize;
        format!("{v:.decimals$}")
    }
}
