//! `agentbox image`: build, import, list and remove root filesystem images (crate agentbox-image).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use agentbox_image::{ImageError, ImageInfo, Progress, Store};
use clap::Subcommand;

const OK: i32 = 0;
const FAILED: i32 = 123;
const BAD_INPUT: i32 = 125;
const MISSING_TOOL: i32 = 127;

/// Exit codes: 0 ok; 123 failure (debootstrap failed, store I/O); 125 bad input (unknown image,
/// malformed archive, bad name); 127 debootstrap is not installed.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build a Debian image with `debootstrap --variant=minbase` (needs root and network access to
    /// the mirror).
    Build {
        /// NAME[:TAG] of letters, digits and `._-`.
        name: String,
        /// The Debian suite: bookworm, trixie, stable...
        #[arg(long = "debian", value_name = "SUITE", required = true)]
        debian: String,
        /// Extra packages, comma-separated.
        #[arg(long, value_delimiter = ',', value_name = "PKG,...")]
        packages: Vec<String>,
        /// The Debian mirror (default http://deb.debian.org/debian).
        #[arg(long, value_name = "URL")]
        mirror: Option<String>,
    },
    /// Import an OCI image layout (directory or tar) or a `docker save` tarball.
    Import {
        /// The directory or archive (tar, tar.gz).
        source: PathBuf,
        /// The name to give it (default: the name recorded in the archive, else the short digest).
        #[arg(long)]
        name: Option<String>,
    },
    /// List images: name, digest, size, age, source.
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove image names; content no name refers to any more is deleted.
    Rm {
        /// Names or digests.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// Runs an image command against the store at `store_root` (default: `$AGENTBOX_IMAGES`, else
/// /var/lib/agentbox/images) and returns the exit code.
pub fn run(cmd: ImageCommand, store_root: Option<PathBuf>) -> i32 {
    let root = store_root.unwrap_or_else(Store::default_root);
    let store = match Store::open(&root) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    match cmd {
        ImageCommand::Build {
            name,
            debian,
            packages,
            mirror,
        } => {
            let mut bar = Bar::new();
            let result =
                store.build_debian(&name, &debian, &packages, mirror.as_deref(), &mut |p| {
                    bar.show(p)
                });
            bar.clear();
            report(result)
        }
        ImageCommand::Import { source, name } => {
            let mut bar = Bar::new();
            let result = store.import(&source, name.as_deref(), &mut |p| bar.show(p));
            bar.clear();
            report(result)
        }
        ImageCommand::Ls { json } => match store.list() {
            Ok(images) if json => match serde_json::to_string_pretty(&images) {
                Ok(text) => {
                    println!("{text}");
                    OK
                }
                Err(e) => {
                    eprintln!("agentbox: image: {e}");
                    FAILED
                }
            },
            Ok(images) => {
                print!("{}", table(&images, now()));
                OK
            }
            Err(e) => fail(&e),
        },
        ImageCommand::Rm { names } => {
            let mut code = OK;
            for name in &names {
                match store.remove(name) {
                    Ok(info) => println!("{} {}", info.name, info.digest),
                    Err(e) => {
                        let c = fail(&e);
                        if code == OK {
                            code = c;
                        }
                    }
                }
            }
            code
        }
    }
}

fn report(result: Result<ImageInfo, ImageError>) -> i32 {
    match result {
        Ok(info) => {
            println!("{} {}", info.name, info.digest);
            OK
        }
        Err(e) => fail(&e),
    }
}

/// Prints the one-line error and returns its exit code.
fn fail(e: &ImageError) -> i32 {
    let text = e.to_string();
    let line: Vec<&str> = text.split_whitespace().collect();
    eprintln!("agentbox: image: {}", line.join(" "));
    match e {
        ImageError::Missing { .. } => MISSING_TOOL,
        e if e.is_bad_input() => BAD_INPUT,
        _ => FAILED,
    }
}

/// Progress on stderr: a `\r` line on a terminal, otherwise one line per stage.
struct Bar {
    tty: bool,
    dirty: bool,
}

impl Bar {
    fn new() -> Bar {
        Bar {
            tty: std::io::stderr().is_terminal(),
            dirty: false,
        }
    }

    fn show(&mut self, p: Progress) {
        let mut err = std::io::stderr().lock();
        match p {
            Progress::Stage(s) => {
                if self.tty {
                    let _ = write!(err, "\r\x1b[K");
                    self.dirty = false;
                }
                let _ = writeln!(err, "{s}");
            }
            Progress::Step { done, total, what } if self.tty => {
                let width = 30u64;
                let filled = (done.min(total) * width).checked_div(total).unwrap_or(0);
                let bar: String = (0..width)
                    .map(|i| if i < filled { '#' } else { '.' })
                    .collect();
                let what: String = what.chars().take(40).collect();
                let _ = write!(err, "\r\x1b[K[{bar}] {done}/{total} {what}");
                let _ = err.flush();
                self.dirty = true;
            }
            Progress::Step { .. } => {}
        }
    }

    fn clear(&mut self) {
        if self.dirty {
            eprint!("\r\x1b[K");
            self.dirty = false;
        }
    }
}

fn table(images: &[ImageInfo], now: u64) -> String {
    let mut rows = vec![[
        "NAME".to_string(),
        "DIGEST".to_string(),
        "SIZE".to_string(),
        "CREATED".to_string(),
        "SOURCE".to_string(),
    ]];
    for i in images {
        rows.push([
            i.name.clone(),
            i.short_digest().to_string(),
            human_size(i.size),
            age(now.saturating_sub(i.created)),
            i.source.clone(),
        ]);
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS.get(unit).unwrap_or(&"B"))
    }
}

fn age(secs: u64) -> String {
    let (n, unit) = match secs {
        0..60 => (secs, "second"),
        60..3600 => (secs / 60, "minute"),
        3600..86400 => (secs / 3600, "hour"),
        _ => (secs / 86400, "day"),
    };
    let plural = if n == 1 { "" } else { "s" };
    format!("{n} {unit}{plural} ago")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_sizes() {
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(123_456_789), "123.5 MB");
        assert_eq!(age(3 * 3600 + 5), "3 hours ago");
        let info = ImageInfo {
            name: "bookworm".into(),
            digest: format!("sha256:{}", "ab".repeat(32)),
            rootfs: PathBuf::from("/x"),
            size: 2_000_000,
            created: 100,
            source: "debootstrap bookworm".into(),
        };
        let t = table(&[info], 160);
        assert_eq!(
            t,
            "NAME       DIGEST         SIZE     CREATED        SOURCE\n\
             bookworm   abababababab   2.0 MB   1 minute ago   debootstrap bookworm\n"
        );
    }
}
