//! `agentbox eval` and `agentbox doctor`: escape probes and benchmarks run against agentbox's tiers
//! and the peer tools installed on this host, with host-side verdicts, rendered as a terminal table,
//! JSON and a self-contained HTML page; and a report of what this host can do.

pub mod doctor;
pub mod harness;
pub mod model;
pub mod report;
