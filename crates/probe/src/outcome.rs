//! One probe's result, as printed on one JSON line.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The technique failed: the sandbox held.
    Blocked,
    /// The technique worked (or the host-side check saw its effect).
    Escaped,
    /// Does not apply to this row (e.g. a cgroup v1 escape on a row without cgroups).
    NotApplicable,
    /// Could not tell (the probe crashed, timed out, or the evidence disagrees).
    Inconclusive,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub id: String,
    pub verdict: Verdict,
    /// What was attempted, e.g. `mount("proc", "/tmp/p", "proc", 0)`.
    pub attempted: String,
    /// The errno name of the failure that decided it (`EPERM`), if any.
    pub errno: Option<String>,
    /// What was observed, one line.
    pub observation: String,
    /// Data the harness checks (what was read from a canary, a process list excerpt...), bounded.
    pub evidence: Option<String>,
}

impl Outcome {
    pub fn new(id: &str, verdict: Verdict, attempted: impl Into<String>) -> Outcome {
        Outcome {
            id: id.to_string(),
            verdict,
            attempted: attempted.into(),
            errno: None,
            observation: String::new(),
            evidence: None,
        }
    }
    pub fn errno(mut self, errno: Option<String>) -> Outcome {
        self.errno = errno;
        self
    }
    pub fn observed(mut self, text: impl Into<String>) -> Outcome {
        self.observation = text.into();
        self
    }
    pub fn evidence(mut self, data: impl Into<String>) -> Outcome {
        let mut data: String = data.into();
        if data.len() > 4096 {
            let mut cut = 4096;
            while !data.is_char_boundary(cut) {
                cut -= 1;
            }
            data.truncate(cut);
        }
        self.evidence = Some(data);
        self
    }
}
