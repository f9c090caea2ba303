//! The manual pages under `man/` and the completions under `completions/` are what
//! `saslauthd_rs::manual` renders from the parsers' option tables (so a new flag cannot be
//! left out of them), groff reads the pages without a warning, and bash, zsh and fish load
//! the completions and complete with them. `SASLAUTHD_RS_WRITE_DOCS=1` writes the files.
//! And every program answers `--version`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use saslauthd_rs::manual;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every generated file: its path in the repository and what it must hold.
fn generated() -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    for page in manual::pages() {
        files.push((
            root().join("man").join(page.file_name()),
            manual::man(&page),
        ));
        if page.is_command() {
            let dir = root().join("completions");
            files.push((dir.join(format!("{}.bash", page.name)), manual::bash(&page)));
            files.push((dir.join(format!("_{}", page.name)), manual::zsh(&page)));
            files.push((dir.join(format!("{}.fish", page.name)), manual::fish(&page)));
        }
    }
    files
}

#[test]
fn the_committed_pages_and_completions_are_the_generated_ones() {
    let write = std::env::var("SASLAUTHD_RS_WRITE_DOCS").as_deref() == Ok("1");
    let mut stale = Vec::new();
    for (path, text) in generated() {
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "out of date (run SASLAUTHD_RS_WRITE_DOCS=1 cargo test --test docs): {stale:?}"
    );
    // Every option of every command is in its page.
    for page in manual::pages().iter().filter(|p| p.is_command()) {
        let text = manual::man(page);
        for o in page.options {
            if let Some(long) = o.long {
                assert!(
                    text.contains(&format!("\\-\\-{}", long.replace('-', "\\-"))),
                    "{} --{long}",
                    page.name
                );
            }
            if let Some(c) = o.short {
                assert!(
                    text.contains(&format!("\\fB\\-{c}\\fR")),
                    "{} -{c}",
                    page.name
                );
            }
        }
    }
}

#[test]
fn groff_reads_every_page_without_a_warning() {
    let Some(groff) = common::peer("groff") else {
        return;
    };
    for page in manual::pages() {
        let path = root().join("man").join(page.file_name());
        let out = Command::new(&groff)
            .args(["-man", "-ww", "-z"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && err.is_empty(),
            "{}: {err}",
            path.display()
        );
        // And man(1) shows its NAME line.
        let shown = Command::new("man")
            .arg("-l")
            .arg(&path)
            .env("MANWIDTH", "100")
            .env("MAN_KEEP_FORMATTING", "0")
            .output();
        if let Ok(shown) = shown {
            let text = String::from_utf8_lossy(&shown.stdout);
            assert!(text.contains(page.name), "{}: {text}", path.display());
        }
    }
}

#[test]
fn bash_completes_with_the_generated_script() {
    let Some(bash) = common::peer("bash") else {
        return;
    };
    let script = root().join("completions/saslauthd-rs.bash");
    let complete = |words: &str| {
        let out = Command::new(&bash)
            .arg("-c")
            .arg(format!(
                ". {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
                 _saslauthd_rs; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                script.display()
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The passdbs this build offers, as -v lists them.
    let offered: Vec<&str> = saslauthd_rs::passdb::offered().collect();
    let listed = |prefix: &str| {
        offered
            .iter()
            .filter(|name| name.starts_with(prefix))
            .map(|name| format!("{name}\n"))
            .collect::<String>()
    };
    assert!(offered.starts_with(&["sasldb", "shadow", "pam", "ldap"]));
    assert_eq!(complete("saslauthd-rs -a ''"), listed(""));
    assert_eq!(complete("saslauthd-rs -a s"), listed("s"));
    let longs = complete("saslauthd-rs --dovecot-s");
    assert_eq!(
        longs,
        "--dovecot-socket\n--dovecot-socket-owner\n--dovecot-socket-mode\n"
    );
    assert!(complete("saslauthd-rs --group ''").contains("root\n"));
    assert!(complete("saslauthd-rs ''").contains("--check-config\n"));
}

#[test]
fn zsh_and_fish_load_the_generated_completions() {
    if let Some(zsh) = common::peer("zsh") {
        for page in manual::pages().iter().filter(|p| p.is_command()) {
            let file = root().join(format!("completions/_{}", page.name));
            let out = Command::new(&zsh).arg("-n").arg(&file).output().unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // Loaded into a real completion system: the -a values are offered.
        let dir = root().join("completions");
        let out = Command::new(&zsh)
            .arg("-fc")
            .arg(format!(
                "fpath=({} $fpath); autoload -Uz compinit; compinit -u -D; \
                 print -r -- ${{_comps[saslauthd-rs]}}",
                dir.display()
            ))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "_saslauthd-rs",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else if std::env::var("SASLAUTHD_RS_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("zsh is not installed (SASLAUTHD_RS_REQUIRE_PEERS=1)");
    }
    if let Some(fish) = common::peer("fish") {
        let file = root().join("completions/saslauthd-rs.fish");
        let complete = |line: &str| {
            let out = Command::new(&fish)
                .arg("--no-config")
                .arg("-c")
                .arg(format!("source {}; complete -C '{line}'", file.display()))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let values = complete("saslauthd-rs -a ");
        assert!(
            values.contains("sasldb") && values.contains("pam"),
            "{values}"
        );
        let options = complete("saslauthd-rs --check");
        assert!(options.starts_with("--check-config\t"), "{options}");
    } else if std::env::var("SASLAUTHD_RS_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("fish is not installed (SASLAUTHD_RS_REQUIRE_PEERS=1)");
    }
}

#[test]
fn every_program_answers_version() {
    for (program, stream_is_stdout) in [
        (env!("CARGO_BIN_EXE_saslauthd-rs"), false),
        (env!("CARGO_BIN_EXE_saslpasswd2-rs"), false),
        (env!("CARGO_BIN_EXE_sasldblistusers2-rs"), false),
        (env!("CARGO_BIN_EXE_testsaslauthd-rs"), false),
        (env!("CARGO_BIN_EXE_sasldb-convert-rs"), false),
        (env!("CARGO_BIN_EXE_saslauthd-rs-ctl"), false),
        (env!("CARGO_BIN_EXE_saslauthd-bench"), true),
    ] {
        let out = Command::new(program)
            .arg("--version")
            .env("SASL_DB", "/nonexistent")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(if stream_is_stdout {
            &out.stdout
        } else {
            &out.stderr
        })
        .into_owned();
        assert!(out.status.success(), "{program}: {text}");
        assert!(
            text.contains(env!("CARGO_PKG_VERSION")),
            "{program}: {text}"
        );
        assert!(Path::new(program).exists());
    }
}
