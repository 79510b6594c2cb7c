//! The escape suite: a C program built with Debian's clang + wasi-libc (tests/c/wasi_probe.c)
//! attacks its sandbox, and the verdict is decided on the host: nothing outside the preopens is
//! read or written, a symlink planted inside the rw preopen leads nowhere, writes land only in
//! the rw preopen, the ro preopen refuses every change, and stdin reaches the program.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use agentbox_wasm::{Preopen, WasmExit, WasmRun};
use common::{plain_run, run_captured};

child_runner!();

/// tests/c/wasi_probe.c compiled for wasm32-wasi, once per test binary.
fn probe_wasm() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/wasi_probe.c");
        let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("agentbox-wasm-c");
        std::fs::create_dir_all(&out_dir).unwrap();
        let wasm = out_dir.join(format!("wasi_probe-{}.wasm", std::process::id()));
        let output = Command::new("clang")
            .args(["--target=wasm32-wasi", "-O1", "-Wall", "-o"])
            .arg(&wasm)
            .arg(&source)
            .output();
        let hint = "the wasm32-wasi C toolchain is missing: run scripts/install-deps.sh \
                    (Debian: clang lld wasi-libc libclang-rt-dev-wasm32)";
        let output = output.unwrap_or_else(|err| panic!("cannot run clang ({err}); {hint}"));
        assert!(
            output.status.success(),
            "clang --target=wasm32-wasi failed; {hint}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        wasm
    })
}

/// A sandbox layout on the host: `base/secret`, `base/outside/secret` (outside every
/// preopen), `base/work` (the rw preopen, `/work`), `base/ro` (the ro preopen, `/ro`).
struct Layout {
    base: tempfile::TempDir,
}

impl Layout {
    fn new() -> Self {
        let base = tempfile::tempdir().unwrap();
        let path = base.path();
        std::fs::write(path.join("secret"), "TOPSECRET\n").unwrap();
        std::fs::create_dir(path.join("outside")).unwrap();
        std::fs::write(path.join("outside/secret"), "OUTSIDE-SECRET\n").unwrap();
        std::fs::create_dir(path.join("work")).unwrap();
        std::fs::create_dir(path.join("ro")).unwrap();
        std::fs::write(path.join("ro/existing.txt"), "original\n").unwrap();
        Self { base }
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.base.path().join(rel)
    }
    fn run(&self, args: &[&str]) -> WasmRun {
        let mut run = plain_run(probe_wasm());
        run.args = std::iter::once("wasi_probe")
            .chain(args.iter().copied())
            .map(str::to_owned)
            .collect();
        run.preopens = vec![
            Preopen {
                host: self.path("work"),
                guest: "/work".into(),
                writable: true,
            },
            Preopen {
                host: self.path("ro"),
                guest: "/ro".into(),
                writable: false,
            },
        ];
        run
    }
    /// Every file name under `rel`, sorted, with the content of regular files.
    fn tree(&self, rel: &str) -> Vec<(String, String)> {
        let mut entries: Vec<(String, String)> = std::fs::read_dir(self.path(rel))
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let content = std::fs::read_to_string(entry.path()).unwrap_or_default();
                (entry.file_name().to_string_lossy().into_owned(), content)
            })
            .collect();
        entries.sort();
        entries
    }
}

#[test]
fn nothing_outside_the_preopens_can_be_read_or_written() {
    let layout = Layout::new();
    let outside = layout.path("outside");
    // Planted on the host inside the rw preopen: links to the outside.
    std::os::unix::fs::symlink(&outside, layout.path("work/link")).unwrap();
    std::os::unix::fs::symlink(layout.path("secret"), layout.path("work/filelink")).unwrap();
    std::os::unix::fs::symlink("..", layout.path("work/dotdot")).unwrap();
    let secret = layout.path("secret");
    for cwd in [None, Some("/work")] {
        let mut args = vec!["escape", secret.to_str().unwrap()];
        args.extend(cwd.map(|_| "cwd"));
        let mut run = layout.run(&args);
        run.cwd = cwd.map(str::to_owned);
        let out = run_captured(&run, b"");
        let report = out.stdout();
        assert_eq!(out.exit, Ok(WasmExit::Code(0)), "cwd {cwd:?}:\n{report}");
        assert!(!report.contains("ESCAPED"), "cwd {cwd:?}:\n{report}");
        assert!(report.contains("denied read /etc/passwd"), "{report}");
        assert!(report.contains("denied read ../secret"), "{report}");
        assert!(report.contains("denied socket calls"), "{report}");
        assert!(!report.contains("SECRET"), "{report}");
    }
    // With a cwd, wasi-libc took "/planted" for "./planted": it landed in the cwd, in the rw
    // preopen, and nowhere else.
    let work: Vec<String> = layout
        .tree("work")
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(work, ["dotdot", "filelink", "link", "planted"]);
    // The host side: secrets untouched, nothing planted outside the rw preopen.
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "TOPSECRET\n");
    assert_eq!(
        layout.tree("outside"),
        [("secret".to_owned(), "OUTSIDE-SECRET\n".to_owned())]
    );
    let mut top: Vec<String> = layout.tree("").into_iter().map(|(name, _)| name).collect();
    top.sort();
    assert_eq!(top, ["outside", "ro", "secret", "work"]);
    assert_eq!(
        layout.tree("ro"),
        [("existing.txt".to_owned(), "original\n".to_owned())]
    );
}

#[test]
fn writes_land_only_in_the_rw_preopen() {
    let layout = Layout::new();
    let out = run_captured(&layout.run(&["write"]), b"");
    let report = out.stdout();
    assert_eq!(out.exit, Ok(WasmExit::Code(0)), "{report}");
    assert!(!report.contains("FAILED"), "{report}");
    assert_eq!(
        std::fs::read_to_string(layout.path("work/out.txt")).unwrap(),
        "written by wasm\n"
    );
    assert!(layout.path("work/newdir").is_dir());
    let work: Vec<String> = layout
        .tree("work")
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(work, ["newdir", "out.txt"]);
    assert_eq!(
        layout.tree("ro"),
        [("existing.txt".to_owned(), "original\n".to_owned())]
    );
    let top: Vec<String> = layout.tree("").into_iter().map(|(name, _)| name).collect();
    assert_eq!(top, ["outside", "ro", "secret", "work"]);
}

#[test]
fn stdin_reaches_the_program() {
    let layout = Layout::new();
    let out = run_captured(&layout.run(&["stdin"]), b"line one\nline two\n");
    assert_eq!(out.exit, Ok(WasmExit::Code(0)));
    assert_eq!(out.stdout(), "stdin 18 bytes: line one\nline two\n");
}

#[test]
fn relative_paths_resolve_against_the_cwd() {
    let layout = Layout::new();
    std::fs::create_dir(layout.path("work/sub")).unwrap();
    std::fs::write(layout.path("work/sub/rel.txt"), "in sub\n").unwrap();
    let mut run = layout.run(&["cwd"]);
    run.cwd = Some("/work/sub".into());
    let out = run_captured(&run, b"");
    let report = out.stdout();
    assert_eq!(out.exit, Ok(WasmExit::Code(0)), "{report}");
    assert!(report.contains("rel.txt: in sub\n"), "{report}");
    assert!(report.contains("PWD=/work/sub\n"), "{report}");
    assert_eq!(
        std::fs::read_to_string(layout.path("work/sub/made-here.txt")).unwrap(),
        "relative\n"
    );
}

#[test]
fn a_cwd_in_the_ro_preopen_is_read_only() {
    let layout = Layout::new();
    std::fs::write(layout.path("ro/rel.txt"), "in ro\n").unwrap();
    let mut run = layout.run(&["cwd"]);
    run.cwd = Some("/ro".into());
    let out = run_captured(&run, b"");
    let report = out.stdout();
    assert!(report.contains("rel.txt: in ro\n"), "{report}");
    assert!(report.contains("FAILED write made-here.txt"), "{report}");
    assert_eq!(out.exit, Ok(WasmExit::Code(1)), "{report}");
    assert!(!layout.path("ro/made-here.txt").exists());
}
