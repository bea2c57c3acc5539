//! The binary's command line as an operator meets it: `--help` and `--version` on stdout with
//! exit code 0, a bad flag or setting on stderr, naming it, with exit code 2.

use std::process::{Command, Output};

fn rendezvous(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rendezvous"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_and_version_go_to_stdout() {
    for args in [&["--help"][..], &["-h"], &["serve", "--help"], &["help"]] {
        let out = rendezvous(args, &[]);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains("Usage: rendezvous") && stdout.contains("--listen"),
            "{args:?}: {stdout}"
        );
        assert!(out.stderr.is_empty(), "{args:?}: {}", text(&out.stderr));
    }
    let out = rendezvous(&["--version"], &[]);
    assert_eq!(out.status.code(), Some(0));
    // The revision is the checkout's: what git says HEAD is (the tests run in one).
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(head.status.success(), "{}", text(&head.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        format!(
            "rendezvous {} ({})",
            env!("CARGO_PKG_VERSION"),
            text(&head.stdout).trim()
        )
    );
}

#[test]
fn bad_flags_and_settings_exit_with_2_naming_them() {
    for (args, env, named) in [
        (&["--bogus"][..], &[][..], "--bogus"),
        (&["serve", "--listen", "nowhere"], &[], "--listen"),
        (&["--log-format", "xml"], &[], "--log-format"),
        (
            &[],
            &[("RENDEZVOUS__RESUME__ACK_TIMEOUT", "30")],
            "resume.ack_timeout",
        ),
    ] {
        let out = rendezvous(args, env);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert!(
            stderr.starts_with("rendezvous: ") && stderr.contains(named),
            "{args:?} {env:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
    }
}
