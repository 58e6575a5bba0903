//! What operators and their tools see of `kg` without root (contract 7): upstream's JSON log lines
//! on stdout, human logs without colour codes through a pipe, the version flags, shell
//! completions and clap's usage errors.

use std::process::{Command, Output, Stdio};

fn kg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kg"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("kg runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8")
}

/// Runs the agent with a fresh key file and a mesh file without this host: it logs the key it
/// generated (flags and file are valid, so it gets that far), then fails on the missing node.
fn agent_that_fails_on_a_missing_node(extra: &[&str]) -> (Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("key").to_string_lossy().into_owned();
    let mesh = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/three-locations.toml");
    let mut args =
        vec!["--key-file", &key, "--backend", "file", "--file", mesh, "--hostname", "nobody"];
    args.extend_from_slice(extra);
    (kg(&args), dir)
}

#[test]
fn the_default_log_line_is_upstreams_go_kit_json_on_stdout() {
    let (out, dir) = agent_that_fails_on_a_missing_node(&[]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one log line on stdout: {stdout:?}");
    let line: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(lines[0]).expect("the log line is a JSON object");
    let keys: Vec<&str> = line.keys().map(String::as_str).collect();
    // go-kit writes the keys sorted, the event's fields among them.
    assert_eq!(keys, ["caller", "file", "level", "msg", "public_key", "ts"], "{line:?}");
    assert_eq!(line["level"], "info");
    assert_eq!(line["msg"], "generated a new private key");
    assert_eq!(line["file"], dir.path().join("key").to_string_lossy().as_ref());
    // go-kit's caller: the file and line of the log call.
    let source = include_str!("../../../kilo-agent/src/keyfile.rs");
    let call = source.lines().position(|l| l.contains("\"generated a new private key\""));
    assert_eq!(line["caller"], format!("keyfile.rs:{}", call.expect("the log call") + 1));
    let ts = line["ts"].as_str().expect("ts is a string");
    // RFC 3339 in UTC: 2026-12-03T07:50:49.123456789Z.
    let (date, time) = ts.split_once('T').expect("date and time");
    assert_eq!(date.len(), 10, "{ts}");
    assert!(date.chars().all(|c| c.is_ascii_digit() || c == '-'), "{ts}");
    assert!(time.ends_with('Z'), "{ts}");
    assert_eq!(&time[2..3], ":", "{ts}");
    // The error that ends the agent is for people, on stderr.
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("kg: ") && stderr.contains("no node named \"nobody\""),
        "{stderr:?}"
    );
}

#[test]
fn the_level_filter_drops_lower_levels() {
    let (out, _dir) = agent_that_fails_on_a_missing_node(&["--log-level", "warn"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn human_logs_through_a_pipe_have_no_colour_codes() {
    let (out, _dir) = agent_that_fails_on_a_missing_node(&["--log-format", "human"]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("INFO") && stdout.contains("generated a new private key"),
        "{stdout:?}"
    );
    assert!(!stdout.contains('\x1b'), "colour codes in {stdout:?}");
}

#[test]
fn subcommands_whose_output_is_their_result_log_on_stderr() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("key").to_string_lossy().into_owned();
    let out = kg(&["pubkey", "--key-file", &key]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "only the key: {stdout:?}");
    assert_eq!(stdout.trim().len(), 44, "{stdout:?}");
    assert!(text(&out.stderr).contains("generated a new private key"));
}

#[test]
fn every_version_spelling_prints_the_version() {
    let version = env!("CARGO_PKG_VERSION");
    for flag in ["-v", "-V", "--version"] {
        let out = kg(&[flag]);
        assert_eq!(out.status.code(), Some(0), "{flag}");
        assert_eq!(text(&out.stdout), format!("kg {version}\n"), "{flag}");
    }
    let out = kg(&["version"]);
    assert_eq!(text(&out.stdout), format!("{version}\n"));
}

#[test]
fn completion_prints_a_script_for_each_shell() {
    for (shell, marker) in
        [("bash", "complete -F _kg"), ("zsh", "#compdef kg"), ("fish", "complete -c kg")]
    {
        let out = kg(&["completion", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = text(&out.stdout);
        assert!(script.contains(marker), "{shell}: {marker:?} not in the script");
        for word in ["backend", "wireguard-socket-dir", "webhook", "pubkey"] {
            assert!(script.contains(word), "{shell}: {word} not completed");
        }
    }
}

#[test]
fn a_usage_error_exits_2_with_clap_s_whole_message() {
    let out = kg(&["--wireguard", "kernal"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    for needle in [
        "invalid value 'kernal' for '--wireguard <WIREGUARD>'",
        "[possible values: kernel, userspace, auto]",
        "tip: a similar value exists: 'kernel'",
    ] {
        assert!(stderr.contains(needle), "{needle:?} not in {stderr:?}");
    }
    let out = kg(&["--listne", ":1107"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    for needle in ["'--listne'", "tip: a similar argument exists: '--listen'", "Usage: kg"] {
        assert!(stderr.contains(needle), "{needle:?} not in {stderr:?}");
    }
}

#[test]
fn the_webhook_without_its_certificate_says_what_it_needs() {
    let out = kg(&["webhook"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "kg: kg webhook needs --cert-file and --key-file: the PEM certificate and private key it \
         serves HTTPS with, which the API server must trust (e.g. from cert-manager, as \
         upstream's webhook manifest)\n"
    );
    let out = kg(&["webhook", "--cert-file", "tls.crt"]);
    assert!(text(&out.stderr).starts_with("kg: kg webhook needs --key-file: "));
}

#[test]
fn no_help_text_refers_to_a_path_outside_the_repository() {
    // A development machine's directory, or any path that climbs out of the repository.
    let foreign = ["/work/", "../"];
    for sub in [&[][..], &["pubkey"], &["version"], &["webhook"], &["crds"], &["completion"]] {
        let mut args = sub.to_vec();
        args.push("--help");
        let out = kg(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let help = text(&out.stdout);
        for bad in foreign {
            assert!(!help.contains(bad), "kg {args:?} names {bad:?}:\n{help}");
        }
    }
}
