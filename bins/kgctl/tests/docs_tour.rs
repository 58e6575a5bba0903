//! The console examples of `docs/kgctl.md` are what kgctl prints: every `$ kgctl …` line of a
//! `console` block is run, and the lines after it (up to a `...` line, which elides the rest)
//! must be the start of its output (stdout, then stderr).

mod kgctl_run;

use kgctl_run::{kgctl, root};

const F: &str = "--backend file --file examples/three-locations.toml";

/// (command line, expected lines, whether the expected text is only a prefix).
fn examples(doc: &str) -> Vec<(String, Vec<String>, bool)> {
    let mut out: Vec<(String, Vec<String>, bool)> = Vec::new();
    let mut in_console = false;
    for line in doc.lines() {
        if line == "```console" {
            in_console = true;
        } else if line.starts_with("```") {
            in_console = false;
        } else if in_console {
            if let Some(command) = line.strip_prefix("$ ") {
                out.push((command.replace("$F", F), Vec::new(), false));
            } else if let Some(last) = out.last_mut() {
                if line == "..." {
                    last.2 = true;
                } else if !last.2 {
                    last.1.push(line.to_string());
                }
            }
        }
    }
    out
}

#[test]
fn the_console_examples_of_the_kgctl_tour_are_real_outputs() {
    let doc = std::fs::read_to_string(root().join("docs/kgctl.md")).unwrap();
    let examples = examples(&doc);
    assert!(examples.len() >= 7, "{examples:?}");
    for (command, expected, prefix) in examples {
        let Some(args) = command.strip_prefix("kgctl ") else { continue };
        let args: Vec<&str> = args.split_whitespace().collect();
        let run = kgctl(&args);
        let output = format!("{}{}", run.stdout, run.stderr);
        let actual: Vec<&str> = output.lines().collect();
        if prefix {
            assert!(actual.len() >= expected.len(), "{command}: {output}");
            assert_eq!(&actual[..expected.len()], &expected[..], "{command}");
        } else {
            assert_eq!(actual, expected, "{command}");
        }
    }
}

#[test]
fn the_rendered_graph_of_the_tour_is_an_svg_of_the_example() {
    let svg = std::fs::read_to_string(root().join("docs/images/three-locations.svg")).unwrap();
    // Graphviz writes '-' as a character reference.
    let svg = svg.replace("&#45;", "-");
    assert!(svg.starts_with("<?xml") && svg.contains("<svg"));
    for name in ["gcp-1", "gcp-2", "aws-1", "aws-2", "home-gw", "laptop", "partner-vpn"] {
        assert!(svg.contains(name), "{name} missing from the SVG");
    }
}
