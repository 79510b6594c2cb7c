//! The audit log: one JSON line per proxy decision, appended (O_APPEND) to a file created 0600.
//! Lines are written whole, one at a time, behind one mutex. Owns the UTC timestamp format too,
//! so the proxy needs no date library.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Whether a request was let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Verdict {
    Allow,
    Deny,
}

/// One decision, as written to the log (field order is the line's key order).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Record {
    pub(crate) time: String,
    pub(crate) sandbox: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) method: String,
    pub(crate) verdict: Verdict,
    pub(crate) reason: String,
    /// The upstream address actually connected to, for allowed connections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) address: Option<String>,
    pub(crate) bytes_up: u64,
    pub(crate) bytes_down: u64,
    pub(crate) ms: u64,
}

/// An open audit log.
#[derive(Debug)]
pub(crate) struct AuditLog {
    file: Mutex<File>,
}

impl AuditLog {
    /// Opens `path` for appending, creating it with mode 0600.
    pub(crate) fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("opening audit log {}: {e}", path.display()),
                )
            })?;
        Ok(Self {
            file: Mutex::new(file),
        })
    }

    /// Appends one line. A failure is reported on stderr and otherwise ignored: the decision has
    /// already been enforced.
    pub(crate) fn write(&self, record: &Record) {
        let mut line = match serde_json::to_vec(record) {
            Ok(line) => line,
            Err(e) => {
                eprintln!("agentbox proxy: audit record: {e}");
                return;
            }
        };
        line.push(b'\n');
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Err(e) = file.write_all(&line) {
            eprintln!("agentbox proxy: writing audit log: {e}");
        }
    }
}

/// `t` as `2026-11-26T22:53:49.123Z` (UTC, milliseconds). Times before 1970 print as the epoch.
pub(crate) fn utc_timestamp(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both fit in u32 by the ranges above.
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(10_957), (2000, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(civil_from_days(47_540), (2100, 2, 28));
        assert_eq!(civil_from_days(47_541), (2100, 3, 1));
        assert_eq!(civil_from_days(20_783), (2026, 11, 26));
        assert_eq!(civil_from_days(2_932_896), (9999, 12, 31));
    }

    #[test]
    fn timestamps() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_733_629_123);
        assert_eq!(utc_timestamp(t), "2026-11-26T22:53:49.123Z");
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            utc_timestamp(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            utc_timestamp(UNIX_EPOCH + Duration::from_secs(951_782_399)),
            "2000-02-28T23:59:59.000Z"
        );
    }

    #[test]
    fn log_lines_are_appended_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        let record = Record {
            time: utc_timestamp(UNIX_EPOCH),
            sandbox: "sb1".into(),
            host: "pypi.org".into(),
            port: 443,
            method: "CONNECT".into(),
            verdict: Verdict::Deny,
            reason: "pypi.org is not on the allowlist".into(),
            address: None,
            bytes_up: 0,
            bytes_down: 0,
            ms: 1,
        };
        log.write(&record);
        drop(log);
        let log = AuditLog::open(&path).unwrap();
        log.write(&Record {
            verdict: Verdict::Allow,
            address: Some("198.51.100.2:443".into()),
            ..record
        });
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            r#"{"time":"1970-01-01T00:00:00.000Z","sandbox":"sb1","host":"pypi.org","port":443,"method":"CONNECT","verdict":"deny","reason":"pypi.org is not on the allowlist","bytes_up":0,"bytes_down":0,"ms":1}"#
        );
        assert!(lines[1].contains(r#""verdict":"allow""#));
        assert!(lines[1].contains(r#""address":"198.51.100.2:443""#));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
