//! Bad input: every runtime error exits 1 with exactly one line on stderr that names the input,
//! and never a panic or a backtrace (contract 5); a usage error (clap's) keeps clap's whole
//! message and exits 2, as `kg`'s.

mod kgctl_run;

use std::path::PathBuf;

use kgctl_run::{Run, kgctl, kgctl_file, kgctl_with};

const KEY_A: &str = "4W+gcAT2Jko7e3cZRXwQ+5rjzS0FmNOXyTulAzAgImQ=";
const KEY_B: &str = "E9XLYrIP/OSytwCmjs+JtyFglkdxk5WOAt7OAEHH1Dw=";

/// Writes `text` to a fresh file named `name` and returns its path.
fn file(name: &str, text: &str) -> String {
    let dir: PathBuf = std::env::temp_dir().join(format!("kgctl-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("temp file");
    path.to_string_lossy().into_owned()
}

fn node(name: &str, key: &str, extra: &str) -> String {
    format!("[[node]]\nname = \"{name}\"\npublic-key = \"{key}\"\n{extra}")
}

/// Asserts the one-line error contract and that the line contains every `needle`.
fn assert_error(run: &Run, needles: &[&str]) {
    assert_eq!(run.code, 1, "exit code; stderr {:?}", run.stderr);
    assert_eq!(run.stdout, "", "nothing on stdout");
    assert!(run.stderr.ends_with('\n'), "{:?}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "one line: {:?}", run.stderr);
    assert!(run.stderr.starts_with("kgctl: "), "{:?}", run.stderr);
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE"] {
        assert!(!run.stderr.contains(bad), "{:?}", run.stderr);
    }
    for needle in needles {
        assert!(run.stderr.contains(needle), "{needle:?} not in {:?}", run.stderr);
    }
}

/// Asserts a usage error: clap's whole message on stderr, exit code 2, and every `needle`.
fn assert_usage_error(run: &Run, needles: &[&str]) {
    assert_eq!(run.code, 2, "exit code; stderr {:?}", run.stderr);
    assert_eq!(run.stdout, "", "nothing on stdout");
    assert!(run.stderr.starts_with("error: "), "{:?}", run.stderr);
    assert!(run.stderr.ends_with("For more information, try '--help'.\n"), "{:?}", run.stderr);
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE"] {
        assert!(!run.stderr.contains(bad), "{:?}", run.stderr);
    }
    for needle in needles {
        assert!(run.stderr.contains(needle), "{needle:?} not in {:?}", run.stderr);
    }
}

/// Runs `showconf node a` and `validate` over a file and checks both fail the same way.
fn assert_file_error(name: &str, text: &str, needles: &[&str]) {
    let path = file(name, text);
    let mut all = vec![path.as_str()];
    all.extend_from_slice(needles);
    for args in [&["showconf", "node", "a"][..], &["validate"], &["graph"]] {
        assert_error(&kgctl_file(&path, args), &all);
    }
}

#[test]
fn a_missing_file_is_named() {
    assert_error(
        &kgctl_file("/nonexistent/mesh.toml", &["graph"]),
        &["/nonexistent/mesh.toml", "No such file"],
    );
}

#[test]
fn invalid_toml_reports_the_line() {
    let text = node("a", KEY_A, "[[node\n");
    assert_file_error("syntax.toml", &text, &["syntax.toml:4:"]);
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let text = node("a", KEY_A, "colour = \"red\"\n");
    assert_file_error("unknown.toml", &text, &[":4:", "unknown key \"colour\""]);
}

#[test]
fn a_value_of_the_wrong_type_is_named_with_its_key_and_line() {
    let text = node("a", KEY_A, "leader = \"yes\"\n");
    assert_file_error("type.toml", &text, &[":4:", "leader"]);
}

#[test]
fn a_bad_key_is_named_with_its_line() {
    let text = node("a", "not-a-key", "");
    assert_file_error("key.toml", &text, &[":3:", "public-key"]);
}

#[test]
fn a_bad_cidr_is_quoted() {
    let text = node("a", KEY_A, "subnet = \"10.2.1.0/33\"\n");
    assert_file_error("cidr.toml", &text, &[":4:", "subnet", "10.2.1.0/33"]);
}

#[test]
fn a_bad_endpoint_is_quoted() {
    let text = node("a", KEY_A, "endpoint = \"1.2.3.4\"\n");
    assert_file_error("endpoint.toml", &text, &[":4:", "endpoint", "1.2.3.4"]);
}

#[test]
fn duplicate_node_names_are_an_error() {
    let text = format!("{}{}", node("a", KEY_A, ""), node("a", KEY_B, ""));
    assert_file_error("dupname.toml", &text, &[":5:", "\"a\" is already used"]);
}

#[test]
fn duplicate_public_keys_are_an_error() {
    let text = format!("{}{}", node("a", KEY_A, ""), node("b", KEY_A, ""));
    assert_file_error("dupkey.toml", &text, &[":6:", KEY_A, "already used"]);
}

#[test]
fn an_empty_file_is_an_error() {
    assert_file_error("empty.toml", "", &["empty"]);
}

#[test]
fn an_empty_standard_input_is_an_error() {
    let run = kgctl_with(&["--backend", "file", "--file", "-", "graph"], "", &[]);
    assert_error(&run, &["empty"]);
}

#[test]
fn an_unknown_node_or_peer_is_named_with_upstreams_message() {
    let f = "examples/three-locations.toml";
    assert_error(
        &kgctl_file(f, &["showconf", "node", "zz"]),
        &["did not find any node named \"zz\" in the cluster"],
    );
    assert_error(
        &kgctl_file(f, &["showconf", "peer", "zz"]),
        &["did not find any peer named \"zz\" in the cluster"],
    );
    assert_error(&kgctl_file(f, &["plan", "node", "zz"]), &["\"zz\""]);
}

#[test]
fn bad_flag_values_are_rejected_with_the_value() {
    let f = "examples/three-locations.toml";
    assert_usage_error(
        &kgctl_file(f, &["--port", "0", "graph"]),
        &["invalid value '0' for '--port <PORT>'", "0 is not in 1..=65535"],
    );
    assert_usage_error(
        &kgctl_file(f, &["--port", "65536", "graph"]),
        &["invalid value '65536' for '--port <PORT>'"],
    );
    assert_error(
        &kgctl_file(f, &["--mesh-granularity", "mesh", "graph"]),
        &["\"mesh\"", "location, full, cross, auto"],
    );
    assert_usage_error(
        &kgctl_file(f, &["showconf", "node", "gcp-1", "--as-peer", "--allowed-ips", "10.1.1.1/40"]),
        &["allowed-ips must contain only valid CIDRs; got \"10.1.1.1/40\""],
    );
    assert_usage_error(
        &kgctl_file(f, &["showconf", "node", "gcp-1", "--allowed-ips", "10.0.0.0/8,nonsense"]),
        &["got \"nonsense\""],
    );
    assert_usage_error(
        &kgctl_file(f, &["--subnet", "10.4.0.0", "graph"]),
        &["invalid value '10.4.0.0' for '--subnet <SUBNET>'"],
    );
    assert_usage_error(
        &kgctl_file(f, &["graph", "-o", "png"]),
        &["invalid value 'png' for '--output <OUTPUT>'", "[possible values: dot, svg]"],
    );
    assert_usage_error(
        &kgctl_file(f, &["plan", "node", "gcp-1", "--local=maybe"]),
        &["invalid value 'maybe' for '--local [<LOCAL>]'", "[possible values: true, false]"],
    );
    assert_usage_error(
        &kgctl_file(f, &["plan", "node", "gcp-1", "--encapsulate", "sometimes"]),
        &["invalid value 'sometimes' for '--encapsulate <ENCAPSULATE>'"],
    );
    assert_error(&kgctl(&["--backend", "file", "graph"]), &["--file"]);
    assert_usage_error(
        &kgctl(&["--backend", "floppy", "graph"]),
        &["invalid value 'floppy'", "[possible values: kubernetes, file]"],
    );
}

#[test]
fn a_missing_argument_is_named_with_the_usage_line() {
    assert_usage_error(
        &kgctl_file("examples/three-locations.toml", &["showconf", "node"]),
        &[
            "the following required arguments were not provided:",
            "<NAME>",
            "Usage: kgctl showconf <KIND> <NAME>",
        ],
    );
}

#[test]
fn a_misspelt_subcommand_or_flag_gets_a_suggestion() {
    assert_usage_error(
        &kgctl(&["grpah"]),
        &[
            "unrecognized subcommand 'grpah'",
            "a similar subcommand exists: 'graph'",
            "Usage: kgctl",
        ],
    );
    assert_usage_error(
        &kgctl_file("examples/three-locations.toml", &["showconf", "node", "a", "--as-per"]),
        &["unexpected argument '--as-per'", "a similar argument exists: '--as-peer'"],
    );
}

#[test]
fn bare_kgctl_prints_its_help() {
    let run = kgctl(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stderr, "");
    assert!(run.stdout.starts_with("Inspect and check a Kilo mesh"), "{}", run.stdout);
    for needle in
        ["Usage: kgctl [OPTIONS] <COMMAND>", "graph", "showconf", "completion", "--backend"]
    {
        assert!(run.stdout.contains(needle), "{needle:?} not in the help");
    }
}

#[test]
fn every_version_spelling_prints_the_version() {
    for flag in ["-v", "-V", "--version"] {
        let run = kgctl(&[flag]);
        assert_eq!(run.code, 0, "{flag}: {}", run.stderr);
        assert_eq!(run.stdout, format!("kgctl {}\n", env!("CARGO_PKG_VERSION")), "{flag}");
    }
}

#[test]
fn completion_prints_a_script_for_each_shell() {
    for (shell, marker) in
        [("bash", "complete -F _kgctl"), ("zsh", "#compdef kgctl"), ("fish", "complete -c kgctl")]
    {
        let run = kgctl(&["completion", shell]);
        assert_eq!(run.code, 0, "{shell}: {}", run.stderr);
        assert!(run.stdout.contains(marker), "{shell}: {marker:?} not in the script");
        for word in ["showconf", "plan", "mesh-granularity", "allowed-ips"] {
            assert!(run.stdout.contains(word), "{shell}: {word} not completed");
        }
    }
    assert_usage_error(
        &kgctl(&["completion", "tcsh"]),
        &["invalid value 'tcsh'", "[possible values: bash, zsh, fish, powershell]"],
    );
}

#[test]
fn allowed_ips_with_host_bits_are_masked_as_upstream() {
    let run = kgctl_file(
        "examples/three-locations.toml",
        &["showconf", "node", "gcp-1", "--as-peer", "--allowed-ips", "10.1.1.1/24"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains(", 10.1.1.0/24\n"), "{}", run.stdout);
}

#[test]
fn pubkey_rejects_what_is_not_a_private_key() {
    assert_error(&kgctl_with(&["pubkey"], "garbage\n", &[]), &["stdin", "not a private key"]);
    assert_error(&kgctl_with(&["pubkey"], "", &[]), &["stdin"]);
}

#[test]
fn mesh_granularity_cross_is_accepted() {
    let run =
        kgctl_file("examples/three-locations.toml", &["--mesh-granularity", "cross", "graph"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
}
