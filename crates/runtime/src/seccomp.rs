//! The seccomp program every ns-tier run installs: the reviewed allowlist (`crates/seccomp/allowlist.toml`)
//! compiled by `agentbox-seccomp` at build time (`crates/runtime/build.rs`) for the target architecture, so
//! a run neither parses nor compiles anything. This module only hands the program out; installing it is
//! `agentbox_sys::seccomp`'s job. The allowlist's data model (denials, whys) lives in `agentbox-seccomp`.

use agentbox_sys::seccomp::SockFilter;

mod generated {
    include!(concat!(env!("OUT_DIR"), "/seccomp_program.rs"));
}

mod generated_list {
    include!(concat!(env!("OUT_DIR"), "/seccomp_allowlist.rs"));
}

/// The default allowlist, as parsed and validated at build time: what the engine tiers translate
/// into their runtimes' seccomp formats (a TOML parse per run took ~0.3-0.5 ms).
pub fn default_allowlist() -> agentbox_seccomp::Allowlist {
    generated_list::default_allowlist()
}

/// The default allowlist compiled for the architecture this binary was built for.
pub fn default_program() -> &'static [SockFilter] {
    &generated::DEFAULT_PROGRAM
}

#[cfg(test)]
mod tests {
    use agentbox_seccomp::{compile, parse_allowlist, Arch, DEFAULT_ALLOWLIST};
    use agentbox_sys::seccomp::SockFilter;

    use super::{default_allowlist, default_program};

    /// As for the program: the embedded list is the parsed text, field for field.
    #[test]
    fn build_time_allowlist_is_the_parsed_default_allowlist() {
        let parsed = parse_allowlist(DEFAULT_ALLOWLIST).unwrap();
        assert_eq!(default_allowlist(), parsed);
        assert!(!parsed.allow_if().is_empty() && !parsed.deny().is_empty());
    }

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
