//! Building a Debian image with `debootstrap --variant=minbase`.

use crate::store::{canonical_name, now_secs, Meta};
use crate::{ImageError, ImageInfo, Progress, Store};
use std::collections::{HashSet, VecDeque};
use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// Packages in a bookworm minbase, for the progress total until the real count is known.
const MINBASE_ESTIMATE: u64 = 90;
/// Lines of output kept for an error message.
const TAIL: usize = 15;

pub(crate) fn build(
    store: &Store,
    name: &str,
    suite: &str,
    packages: &[String],
    mirror: Option<&str>,
    progress: &mut dyn FnMut(Progress),
) -> Result<ImageInfo, ImageError> {
    let name = canonical_name(name)?;
    check_suite(suite)?;
    for p in packages {
        check_package(p)?;
    }
    let mirror = mirror.unwrap_or(DEFAULT_MIRROR);
    check_mirror(mirror)?;
    let search = search_path(store.tool_path());
    let debootstrap = find_tool("debootstrap", &search).ok_or_else(|| ImageError::Missing {
        tool: "debootstrap".into(),
        fix: "apt-get install debootstrap".into(),
    })?;

    let work = store.work_dir()?;
    let target = work.path.join("rootfs");
    let mut cmd = Command::new(&debootstrap);
    cmd.arg("--variant=minbase");
    if !packages.is_empty() {
        cmd.arg(format!("--include={}", packages.join(",")));
    }
    cmd.arg(suite)
        .arg(&target)
        .arg(mirror)
        .env("PATH", &search)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    progress(Progress::Stage(format!(
        "debootstrap {suite} from {mirror}"
    )));
    let mut child = cmd.spawn().map_err(|e| ImageError::Failed {
        step: "debootstrap".into(),
        message: format!("cannot start {}: {e}", debootstrap.display()),
    })?;
    let (tx, rx) = mpsc::channel::<String>();
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(spawn_reader(out, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(spawn_reader(err, tx.clone()));
    }
    drop(tx);
    let mut parser = LineParser::new(packages.len() as u64);
    let mut tail: VecDeque<String> = VecDeque::new();
    for line in rx {
        if let Some(p) = parser.parse(&line) {
            progress(p);
        }
        tail.push_back(line);
        if tail.len() > TAIL {
            tail.pop_front();
        }
    }
    for r in readers {
        let _ = r.join();
    }
    let status = child.wait().map_err(|e| ImageError::Failed {
        step: "debootstrap".into(),
        message: e.to_string(),
    })?;
    if !status.success() {
        let log = log_tail(&target.join("debootstrap/debootstrap.log"));
        let output: Vec<String> = tail.into_iter().collect();
        let mut message = format!("{status}; output:\n{}", output.join("\n"));
        if !log.is_empty() {
            message.push_str(&format!("\ndebootstrap.log:\n{}", log.join("\n")));
        }
        return Err(ImageError::Failed {
            step: "debootstrap".into(),
            message,
        });
    }

    progress(Progress::Stage("cleaning apt caches".into()));
    clean_apt(&target)?;
    progress(Progress::Stage("computing the digest".into()));
    let measured = crate::tree::measure(&target, true)?;
    let digest = measured.digest.unwrap_or_default();
    let meta = Meta {
        digest,
        size: measured.size,
        created: now_secs(),
        source: format!("debootstrap {suite}"),
    };
    store.commit(work, &meta, &name)
}

fn spawn_reader(
    stream: impl Read + Send + 'static,
    tx: mpsc::Sender<String>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).split(b'\n').map_while(Result::ok) {
            if tx
                .send(String::from_utf8_lossy(&line).into_owned())
                .is_err()
            {
                break;
            }
        }
    })
}

/// Turns debootstrap's `I:` lines into progress.
struct LineParser {
    retrieved: HashSet<String>,
    estimate: u64,
    stage: String,
    done: u64,
}

impl LineParser {
    fn new(extra: u64) -> Self {
        LineParser {
            retrieved: HashSet::new(),
            estimate: MINBASE_ESTIMATE + extra,
            stage: String::new(),
            done: 0,
        }
    }

    fn parse(&mut self, line: &str) -> Option<Progress> {
        let text = line.strip_prefix("I: ")?.trim();
        let mut words = text.split_whitespace();
        let verb = words.next()?;
        let package = words.next().map(|p| p.trim_end_matches("..."));
        let version = words.next();
        let stage = match (verb, package, version) {
            ("Retrieving", Some(p), Some(_)) => {
                self.retrieved.insert(p.to_string());
                "retrieving"
            }
            ("Validating", Some(_), Some(_)) => "validating",
            ("Extracting", Some(_), None) => "extracting",
            ("Unpacking", Some(p), None) if p != "required" && p != "the" => "unpacking",
            ("Configuring", Some(p), None) if p != "required" => "configuring",
            _ => return Some(Progress::Stage(text.to_string())),
        };
        if stage != self.stage {
            self.stage = stage.to_string();
            self.done = 0;
        }
        self.done += 1;
        let known = self.retrieved.len() as u64;
        let total = if stage == "retrieving" {
            self.estimate.max(self.done)
        } else {
            known.max(self.done)
        };
        Some(Progress::Step {
            done: self.done,
            total,
            what: format!("{stage} {}", package.unwrap_or("")),
        })
    }
}

/// Removes downloaded packages and package lists; they are re-fetched by `apt-get update`.
fn clean_apt(root: &Path) -> Result<(), ImageError> {
    let archives = root.join("var/cache/apt/archives");
    remove_files(&archives, |name| name.ends_with(".deb"))?;
    remove_files(&archives.join("partial"), |_| true)?;
    remove_files(&root.join("var/cache/apt"), |name| name.ends_with(".bin"))?;
    remove_files(&root.join("var/lib/apt/lists"), |name| {
        name != "lock" && name != "partial"
    })?;
    remove_files(&root.join("var/lib/apt/lists/partial"), |_| true)?;
    let leftover = root.join("debootstrap");
    if fs::symlink_metadata(&leftover).is_ok() {
        fs::remove_dir_all(&leftover).map_err(ImageError::io(&leftover))?;
    }
    Ok(())
}

fn remove_files(dir: &Path, wanted: impl Fn(&str) -> bool) -> Result<(), ImageError> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry.map_err(ImageError::io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let is_dir = fs::symlink_metadata(&path)
            .map(|m| m.is_dir())
            .unwrap_or(false);
        if !is_dir && wanted(&name) {
            fs::remove_file(&path).map_err(ImageError::io(&path))?;
        }
    }
    Ok(())
}

fn log_tail(path: &Path) -> Vec<String> {
    let Ok(text) = fs::read(path) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(TAIL);
    lines
        .get(start..)
        .unwrap_or(&[])
        .iter()
        .map(|l| l.to_string())
        .collect()
}

/// The `PATH` used to find and run debootstrap: the override, else ours plus the sbin directories
/// (debootstrap lives in /usr/sbin and needs chroot from there).
fn search_path(tool_path: Option<&OsString>) -> OsString {
    if let Some(p) = tool_path {
        return p.clone();
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for extra in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        if !dirs.iter().any(|d| d == Path::new(extra)) {
            dirs.push(PathBuf::from(extra));
        }
    }
    std::env::join_paths(dirs).unwrap_or_default()
}

fn find_tool(tool: &str, search: &OsString) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(search)
        .filter(|d| d.is_absolute())
        .map(|d| d.join(tool))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

fn check_suite(suite: &str) -> Result<(), ImageError> {
    let ok = !suite.is_empty()
        && suite.len() <= 64
        && suite.starts_with(|c: char| c.is_ascii_lowercase())
        && suite
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ImageError::invalid(
            "suite",
            format!("`{suite}`: a Debian suite is lowercase letters, digits, `-` and `.` (bookworm, trixie, stable)"),
        ))
    }
}

/// Debian policy 5.6.1: lowercase letters, digits, `+`, `-`, `.`; at least two characters,
/// starting with a letter or digit.
fn check_package(package: &str) -> Result<(), ImageError> {
    let ok = package.len() >= 2
        && package.len() <= 128
        && package.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && package
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ImageError::invalid(
            "package",
            format!("`{package}` is not a Debian package name (lowercase letters, digits, `+-.`)"),
        ))
    }
}

fn check_mirror(mirror: &str) -> Result<(), ImageError> {
    let scheme_ok = ["http://", "https://", "file:///"]
        .iter()
        .any(|s| mirror.starts_with(s) && mirror.len() > s.len());
    if scheme_ok && mirror.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(ImageError::invalid(
            "mirror",
            format!("`{mirror}` is not an http://, https:// or file:/// URL"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_suite("bookworm").is_ok());
        assert!(check_suite("bookworm; rm -rf /").is_err());
        assert!(check_suite("-x").is_err());
        assert!(check_package("libc6").is_ok());
        assert!(check_package("g++").is_ok());
        assert!(check_package("--foo").is_err());
        assert!(check_package("a,b").is_err());
        assert!(check_mirror("http://deb.debian.org/debian").is_ok());
        assert!(check_mirror("http://x y").is_err());
        assert!(check_mirror("ftp://x").is_err());
    }

    #[test]
    fn progress_lines_are_parsed() {
        let mut p = LineParser::new(0);
        assert_eq!(
            p.parse("I: Retrieving libc6 2.36-9+deb12u4"),
            Some(Progress::Step {
                done: 1,
                total: MINBASE_ESTIMATE,
                what: "retrieving libc6".into()
            })
        );
        assert!(matches!(
            p.parse("I: Retrieving InRelease "),
            Some(Progress::Stage(_))
        ));
        assert_eq!(
            p.parse("I: Extracting libc6..."),
            Some(Progress::Step {
                done: 1,
                total: 1,
                what: "extracting libc6".into()
            })
        );
        assert!(matches!(
            p.parse("I: Unpacking required packages..."),
            Some(Progress::Stage(_))
        ));
        assert_eq!(p.parse("W: something"), None);
    }
}
