//! The README's layout table is the newcomer's map of the tree: every top-level folder has a
//! row, every row's folder exists, and every file or folder a row names is in that folder (or,
//! named by its path from the top, where it says).

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is in the workspace")
        .to_path_buf()
}

/// (folder, names in backticks) per row of the table under `## Layout`.
fn rows(readme: &str) -> Vec<(String, Vec<String>)> {
    let section = readme
        .split("\n## Layout\n")
        .nth(1)
        .expect("README has a ## Layout section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|line| {
            let mut cells = line.split(" | ");
            let folder = cells
                .next()
                .unwrap_or_default()
                .trim_start_matches("| ")
                .trim_matches('`')
                .trim_end_matches('/')
                .to_owned();
            let rest: String = cells.collect::<Vec<_>>().join(" | ");
            let names = rest
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect();
            (folder, names)
        })
        .collect()
}

/// Every path under `dir`, relative to it (`target/` and hidden folders left out).
fn tree(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name == "target" {
                continue;
            }
            let relative = path
                .strip_prefix(dir)
                .expect("under dir")
                .to_string_lossy()
                .into_owned();
            if path.is_dir() {
                found.push(format!("{relative}/"));
                stack.push(path);
            } else {
                found.push(relative);
            }
        }
    }
    found
}

/// A backticked name that is a path: a file with an extension we keep, or a folder.
fn is_path(name: &str) -> bool {
    !name.contains(' ')
        && !name.contains('*')
        && !name.starts_with('-')
        && (name.ends_with('/')
            || [".rs", ".sh", ".py", ".yaml", ".toml"]
                .iter()
                .any(|ext| name.ends_with(ext)))
}

#[test]
fn readme_layout_matches_the_tree() {
    let root = root();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let rows = rows(&readme);
    assert!(rows.len() > 5, "the layout table was not found");
    let mut problems = Vec::new();
    let listed: Vec<&str> = rows.iter().map(|(f, _)| f.as_str()).collect();
    for entry in std::fs::read_dir(&root).expect("the workspace").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir()
            && !name.starts_with('.')
            && !["target", "out"].contains(&name.as_str())
            && !listed.contains(&name.as_str())
        {
            problems.push(format!("folder {name}/ has no row"));
        }
    }
    for (folder, names) in &rows {
        let dir = root.join(folder);
        if !dir.is_dir() {
            problems.push(format!("row {folder}/: no such folder"));
            continue;
        }
        let tree = tree(&dir);
        for name in names.iter().filter(|n| is_path(n)) {
            let suffix = name.trim_start_matches("./");
            // A row may name a file elsewhere by its path from the top (`manifests/…`).
            let found = tree
                .iter()
                .any(|p| p == suffix || p.ends_with(&format!("/{suffix}")))
                || root.join(suffix).exists();
            if !found {
                problems.push(format!("row {folder}/ names {name}, not in {folder}/"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "README layout:\n{}",
        problems.join("\n")
    );
}
