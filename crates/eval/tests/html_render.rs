//! The HTML report loads in a real browser: the sample report is rendered to a file, opened in
//! headless Chromium, and the DOM Chromium built (not our string) must hold the two charts, the
//! probe matrix and the spectrum's points; a screenshot of the page must be a real image.
//! Chromium is required (scripts/install-deps.sh installs it): without it these tests fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use agentbox_eval::report::{render_html, sample::sample_report};

fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::var("PATH").unwrap_or_default().split(':') {
            let candidate = Path::new(dir).join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "chromium is not installed: the HTML report test needs a headless browser; \
         install it with `sudo scripts/install-deps.sh` (or `apt-get install -y chromium`)"
    );
}

/// Runs headless Chromium on `page` with `extra` arguments, killing it after 90 s.
fn run_chromium(page: &Path, profile: &Path, extra: &[&str]) -> Output {
    let mut child = Command::new(chromium())
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chromium");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if child.try_wait().expect("wait for chromium").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("collect chromium output");
    assert!(
        out.status.success(),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn rendered_page() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let page = dir.path().join("report.html");
    std::fs::write(&page, render_html(&sample_report())).expect("write page");
    (dir, page)
}

#[test]
fn html_report_dom_in_headless_chromium_has_charts_and_matrix() {
    let (dir, page) = rendered_page();
    let out = run_chromium(&page, &dir.path().join("profile"), &["--dump-dom"]);
    let dom = String::from_utf8_lossy(&out.stdout);
    for id in [
        "id=\"spectrum-chart\"",
        "id=\"latency-chart\"",
        "id=\"probe-matrix\"",
    ] {
        assert!(dom.contains(id), "{id} missing from the DOM:\n{dom}");
    }
    let spectrum = dom
        .split("id=\"spectrum-chart\"")
        .nth(1)
        .and_then(|rest| rest.split("</svg>").next())
        .unwrap();
    assert!(
        spectrum.contains("<circle"),
        "no point in the spectrum chart:\n{spectrum}"
    );
    assert!(
        dom.contains("sentinel &lt;killed&gt; by the probe"),
        "escaped text survives parsing"
    );
}

#[test]
fn html_report_screenshot_in_headless_chromium_is_nontrivial() {
    let (dir, page) = rendered_page();
    // In the test's own directory: nothing is left on the host (set AGENTBOX_SCREENSHOT to keep
    // it somewhere to look at).
    let shot = std::env::var("AGENTBOX_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| dir.path().join("report.png"));
    let shot = shot.display().to_string();
    run_chromium(
        &page,
        &dir.path().join("profile"),
        &[
            &format!("--screenshot={shot}"),
            "--window-size=1400,2000",
            "--hide-scrollbars",
        ],
    );
    let png = std::fs::read(&shot)
        .unwrap_or_else(|e| panic!("chromium wrote no screenshot at {shot}: {e}"));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{shot} is not a PNG");
    assert!(
        png.len() > 10 * 1024,
        "screenshot is only {} bytes",
        png.len()
    );
}
