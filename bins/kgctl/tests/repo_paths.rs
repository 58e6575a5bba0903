//! No user-facing file and no help text refers to a path outside the repository: every relative
//! path that climbs (`../x`) stays inside the repository and exists, and nothing names a
//! development machine's directories.

mod kgctl_run;

use std::path::{Component, Path, PathBuf};

use kgctl_run::{kgctl, root};

/// Texts that only make sense on the machine the project was developed on. (A reference to
/// material beside the repository climbs out of it, which the path check below reports; this
/// list names none of that material itself.)
const FOREIGN: [&str; 1] = ["/work/"];

/// Whether `path` (relative to the repository) is read by users: documentation, examples,
/// scripts, manifests, the chart and packaging.
fn user_facing(path: &Path) -> bool {
    let first = path.components().next().and_then(|c| c.as_os_str().to_str()).unwrap_or("");
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match first {
        "docs" | "examples" | "scripts" | "manifests" | "charts" | "packaging" => {
            !matches!(ext, "svg" | "png")
        }
        _ => path.parent() == Some(Path::new("")) && ext == "md",
    }
}

/// Every file of the repository (`.git` and build output left out), relative to the root.
fn files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(root.join(&dir)) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if [".git", "target", "fuzz"].iter().any(|skip| name == *skip) {
                continue;
            }
            let rel = dir.join(&name);
            match entry.file_type() {
                Ok(t) if t.is_dir() => dirs.push(rel),
                Ok(t) if t.is_file() => out.push(rel),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// `base/rel` with `.` and `..` resolved lexically; `None` when it climbs above `base`'s root.
fn resolve(base: &Path, rel: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in base.join(rel).components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

/// The problems in `text`, a file at `path` (relative to the repository root `root`).
fn problems(root: &Path, path: &Path, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let at = format!("{}:{}", path.display(), number + 1);
        for foreign in FOREIGN {
            if line.contains(foreign) {
                found.push(format!("{at}: names {foreign:?}: {line}"));
            }
        }
        let mut rest = line;
        while let Some(start) = rest.find("../") {
            // Paths of a test's own fixtures (`name = "../etc"`) are data, not references.
            let before = &rest[..start];
            let token_start = before
                .rfind(|c: char| !(c.is_alphanumeric() || "._-/".contains(c)))
                .map_or(0, |i| i + 1);
            let token: String = rest[token_start..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || "._-/#".contains(*c))
                .collect();
            rest = &rest[start + 3..];
            let target = token.split('#').next().unwrap_or("");
            let dir = path.parent().unwrap_or(Path::new(""));
            match resolve(dir, target) {
                None => found.push(format!("{at}: {token:?} leaves the repository")),
                Some(p) if !root.join(&p).exists() && !target.ends_with("/..") => {
                    found.push(format!("{at}: {token:?} does not exist"));
                }
                Some(_) => {}
            }
        }
    }
    found
}

#[test]
fn no_user_facing_file_refers_to_a_path_outside_the_repository() {
    let root = root().canonicalize().expect("the repository");
    let mut found = Vec::new();
    let mut checked = 0;
    for path in files(&root).into_iter().filter(|p| user_facing(p)) {
        let Ok(text) = std::fs::read_to_string(root.join(&path)) else { continue };
        checked += 1;
        // Scripts `cd "$(dirname "$0")/.."` to the repository root: that stays inside.
        let text = text.replace("\"$(dirname \"$0\")/..\"", "");
        found.extend(problems(&root, &path, &text));
    }
    assert!(checked >= 10, "only {checked} files checked");
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_checker_catches_paths_that_leave_the_repository() {
    let root = root().canonicalize().expect("the repository");
    let readme = Path::new("README.md");
    let doc = Path::new("docs/kgctl.md");
    assert_eq!(
        problems(&root, readme, "See `../notes/plan.md` in /work/notes.\n"),
        [
            "README.md:1: names \"/work/\": See `../notes/plan.md` in /work/notes.",
            "README.md:1: \"../notes/plan.md\" leaves the repository",
        ]
    );
    assert_eq!(problems(&root, doc, "[x](../examples/nat.toml)\n"), Vec::<String>::new());
    assert_eq!(
        problems(&root, doc, "[x](../examples/none.toml)\n"),
        ["docs/kgctl.md:1: \"../examples/none.toml\" does not exist"]
    );
    assert_eq!(
        problems(&root, doc, "in /work/main\n"),
        ["docs/kgctl.md:1: names \"/work/\": in /work/main"]
    );
}

#[test]
fn no_help_text_refers_to_a_path_outside_the_repository() {
    let subcommands: [&[&str]; 9] = [
        &[],
        &["graph"],
        &["showconf"],
        &["plan"],
        &["validate"],
        &["connect"],
        &["genkey"],
        &["pubkey"],
        &["completion"],
    ];
    for sub in subcommands {
        let mut args = sub.to_vec();
        args.push("--help");
        let run = kgctl(&args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        for foreign in FOREIGN.iter().chain(&["../"]) {
            assert!(
                !run.stdout.contains(foreign),
                "kgctl {args:?} names {foreign:?}:\n{}",
                run.stdout
            );
        }
    }
}
