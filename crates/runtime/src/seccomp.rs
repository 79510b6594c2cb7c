//! The seccomp program every ns-tier run installs: the reviewed allowlist (`crates/seccomp/allowlist.toml`)
//! compiled by `agentbox-seccomp` at build time (`crates/runtime/build.rs`) for the target architecture, so
//! a run neither parses nor compiles anything. This module only hands the program out; installing it is
//! `agentbox_sys::seccomp`'s job. The allowlist's data model (denials, whys) lives in `agentbox-seccomp`.

use agentbox_sys::seccomp::SockFilter;

mod generated {
    include!(concat!(env!("OUT_DIR"), "/seccomp_program.rs"));
}

/// The default allowlist compiled for the architecture this binary was built for.
pub fn default_program() -> &'static [SockFilter] {
    &generated::DEFAULT_PROGRAM
}

#[cfg(test)]
mod tests {
    use agentbox_seccomp::{compile, parse_allowlist, Arch, DEFAULT_ALLOWLIST};
    use agentbox_sys::seccomp::SockFilter;

    use super::default_program;

    /// The build script and the library are the same compiler over the same text, so the embedded
    /// program cannot drift from what the allowlist's tests check.
    #[test]
    fn build_time_program_is_the_compiled_default_allowlist() {
        let list = parse_allowlist(DEFAULT_ALLOWLIST).unwrap();
        let want: Vec<SockFilter> = compile(&list, Arch::native())
            .unwrap()
            .into_iter()
            .map(|i| SockFilter {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect();
        assert_eq!(default_program(), want.as_slice());
        assert!(!default_program().is_empty());
    }
}
