//! Persistent sandboxes without a daemon: `create` starts a per-sandbox supervisor; `exec`, `rm`
//! and `ls` talk to it (or read its state) under /run/agentbox/<id>/.

mod agent_files;
mod client;
mod files;
mod held;
mod network;
pub mod protocol;
pub mod state;
mod supervisor;
mod threaded;
pub mod wasm;

pub use client::{exec, stop, terminal_size};
pub use files::{copy_in, copy_out};
pub use network::{network, Allowlist};
pub use state::{Health, State};
pub(crate) use supervisor::error_from_kind;
pub use supervisor::{create, CreateOptions};
pub use threaded::{
    create_with_helper, exec_captured, exec_streaming, list_dir, parse_options, read_file,
    write_file, Captured, DirEntry, Stream, CREATE_SUBCOMMAND, OPTIONS_VARIABLE,
};
