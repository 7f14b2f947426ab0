//! containerd's `config.toml`: adding and removing the `virtshim` runtime handler, and the CRI
//! settings some nodes need first (`configure`).
//!
//! The runtime goes into config.toml itself, not into a drop-in under `imports`: containerd 1.6
//! merges imported files by replacing a plugin's whole table, so a drop-in holding a runtime
//! would wipe the node's other CRI settings (as kata-deploy also found). Edits keep the rest of
//! the file, comments and order included (`toml_edit`).
//!
//! Config version 2 (containerd 1.6/1.7) keeps runtimes under
//! `plugins."io.containerd.grpc.v1.cri".containerd.runtimes`, version 3 (containerd 2.x) under
//! `plugins."io.containerd.cri.v1.runtime".containerd.runtimes`. A file without a version is
//! version 1, which containerd 1.6 still reads with the same layout as version 2.

use toml_edit::{value, Array, DocumentMut, Item, Table};

/// The CRI runtime handler name (the RuntimeClass's `handler`).
pub const HANDLER: &str = "virtshim";
/// containerd derives the shim binary's name from this: `containerd-shim-virtshim-v2`.
pub const RUNTIME_TYPE: &str = "io.containerd.virtshim.v2";
/// Pod annotations containerd passes to the shim: the VMI travels in one.
pub const POD_ANNOTATIONS: &str = "virtshim.io/*";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("not valid TOML: {0}")]
    Parse(#[from] toml_edit::TomlError),
    #[error("{path} is not a table")]
    NotATable { path: String },
    #[error("config version {0} is not one virtshim knows (1, 2 or 3)")]
    Version(i64),
}

/// The plugin table that holds runtimes, by config version.
fn cri_plugin(doc: &DocumentMut) -> Result<&'static str, ConfigError> {
    let version = doc.get("version").and_then(Item::as_integer).unwrap_or(1);
    match version {
        1 | 2 => Ok("io.containerd.grpc.v1.cri"),
        3 => Ok("io.containerd.cri.v1.runtime"),
        other => Err(ConfigError::Version(other)),
    }
}

/// The table at `path` (created, implicit, when missing).
fn table_at<'a>(doc: &'a mut DocumentMut, path: &[&str]) -> Result<&'a mut Table, ConfigError> {
    let mut table = doc.as_table_mut();
    for (i, key) in path.iter().enumerate() {
        let entry = table.entry(key).or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        });
        table = entry.as_table_mut().ok_or_else(|| ConfigError::NotATable {
            path: path[..=i].join("."),
        })?;
    }
    Ok(table)
}

/// The config as a document. A file with nothing in it (or none) becomes version 2: the tables
/// written below carry version 2's plugin names, which containerd 1.6 ignores in a file that,
/// having no version line, it reads as version 1 (a node's sandbox image then went unused);
/// containerd 2.x migrates version 2 itself.
fn parse(text: &str) -> Result<DocumentMut, ConfigError> {
    let mut doc: DocumentMut = text.parse()?;
    if doc.as_table().is_empty() {
        doc["version"] = value(2);
    }
    Ok(doc)
}

/// Adds (or updates) the `virtshim` runtime. Returns the new text and whether it changed.
///
/// A runtimes table in config.toml replaces containerd's built-in one, which held runc, so the
/// default runtime is defined too when the file does not define it.
pub fn install(text: &str) -> Result<(String, bool), ConfigError> {
    let mut doc = parse(text)?;
    let plugin = cri_plugin(&doc)?;
    let containerd = table_at(&mut doc, &["plugins", plugin, "containerd"])?;
    let default_runtime = containerd
        .get("default_runtime_name")
        .and_then(Item::as_str)
        .unwrap_or("runc")
        .to_owned();
    let runtimes = containerd
        .entry("runtimes")
        .or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        })
        .as_table_mut()
        .ok_or_else(|| ConfigError::NotATable {
            path: format!("plugins.{plugin}.containerd.runtimes"),
        })?;
    if !runtimes.contains_key(&default_runtime) {
        let mut runc = Table::new();
        runc["runtime_type"] = value("io.containerd.runc.v2");
        runtimes.insert(&default_runtime, Item::Table(runc));
    }
    let mut ours = Table::new();
    ours["runtime_type"] = value(RUNTIME_TYPE);
    let mut annotations = Array::new();
    annotations.push(POD_ANNOTATIONS);
    ours["pod_annotations"] = value(annotations);
    // The container is empty: no host devices belong in it even for privileged pods.
    ours["privileged_without_host_devices"] = value(true);
    let unchanged = runtimes
        .get(HANDLER)
        .and_then(Item::as_table)
        .is_some_and(|t| t.to_string() == ours.to_string());
    if !unchanged {
        runtimes.insert(HANDLER, Item::Table(ours));
    }
    let new = doc.to_string();
    let changed = new != text;
    Ok((new, changed))
}

/// Removes the `virtshim` runtime, leaving everything else. Returns the new text and whether
/// it changed.
pub fn uninstall(text: &str) -> Result<(String, bool), ConfigError> {
    let mut doc: DocumentMut = text.parse()?;
    let plugin = cri_plugin(&doc)?;
    let removed = doc
        .get_mut("plugins")
        .and_then(|p| p.get_mut(plugin))
        .and_then(|c| c.get_mut("containerd"))
        .and_then(|c| c.get_mut("runtimes"))
        .and_then(Item::as_table_mut)
        .and_then(|r| r.remove(HANDLER))
        .is_some();
    Ok((doc.to_string(), removed))
}

/// Whether the `virtshim` runtime is configured.
pub fn is_installed(text: &str) -> Result<bool, ConfigError> {
    let doc: DocumentMut = text.parse()?;
    let plugin = cri_plugin(&doc)?;
    Ok(doc
        .get("plugins")
        .and_then(|p| p.get(plugin))
        .and_then(|c| c.get("containerd"))
        .and_then(|c| c.get("runtimes"))
        .and_then(|r| r.get(HANDLER))
        .and_then(|h| h.get("runtime_type"))
        .and_then(Item::as_str)
        == Some(RUNTIME_TYPE))
}

/// CRI settings some nodes need before they can run any pod (see `configure`).
#[derive(Debug, Default)]
pub struct NodeSettings<'a> {
    /// The pod sandbox ("pause") image to use when the node's is unset or is the stock
    /// `registry.k8s.io` one, which a node without a registry cannot pull. An image the
    /// administrator chose is kept.
    pub sandbox_image: Option<&'a str>,
    /// `restrict_oom_score_adj = true`: for a containerd without `CAP_SYS_RESOURCE` (inside a
    /// container or a sandbox), which otherwise fails to lower a pod's OOM score.
    pub restrict_oom_score_adj: bool,
}

/// Where the sandbox image and the OOM-score setting live, by config version.
fn settings_tables(
    doc: &DocumentMut,
) -> Result<(Vec<&'static str>, &'static str, Vec<&'static str>), ConfigError> {
    let version = doc.get("version").and_then(Item::as_integer).unwrap_or(1);
    match version {
        1 | 2 => Ok((
            vec!["plugins", "io.containerd.grpc.v1.cri"],
            "sandbox_image",
            vec!["plugins", "io.containerd.grpc.v1.cri"],
        )),
        3 => Ok((
            vec!["plugins", "io.containerd.cri.v1.images", "pinned_images"],
            "sandbox",
            vec!["plugins", "io.containerd.cri.v1.runtime"],
        )),
        other => Err(ConfigError::Version(other)),
    }
}

/// Applies `settings`. Returns the new text, whether it changed, and the sandbox image in
/// effect (`None`: containerd's built-in default).
pub fn configure(
    text: &str,
    settings: &NodeSettings<'_>,
) -> Result<(String, bool, Option<String>), ConfigError> {
    let mut doc = parse(text)?;
    let (image_table, image_key, runtime_table) = settings_tables(&doc)?;
    let images = table_at(&mut doc, &image_table)?;
    let mut image = images
        .get(image_key)
        .and_then(Item::as_str)
        .map(str::to_owned);
    if let Some(wanted) = settings.sandbox_image {
        let replaceable = image
            .as_deref()
            .is_none_or(|i| i.is_empty() || i.starts_with("registry.k8s.io/"));
        if replaceable && image.as_deref() != Some(wanted) {
            images.insert(image_key, value(wanted));
            image = Some(wanted.to_owned());
        }
    }
    if settings.restrict_oom_score_adj {
        let runtime = table_at(&mut doc, &runtime_table)?;
        if runtime
            .get("restrict_oom_score_adj")
            .and_then(Item::as_bool)
            != Some(true)
        {
            runtime.insert("restrict_oom_score_adj", value(true));
        }
    }
    let new = doc.to_string();
    let changed = new != text;
    Ok((new, changed, image))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const DEBIAN: &str = r#"# containerd config (Debian)
version = 2

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/virtshim/pause:v1"
  restrict_oom_score_adj = true

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
"#;

    #[test]
    fn install_adds_the_runtime_and_keeps_everything_else() {
        let (text, changed) = install(DEBIAN).unwrap();
        assert!(changed);
        assert!(text.starts_with("# containerd config (Debian)"), "{text}");
        assert!(text.contains("restrict_oom_score_adj = true"), "{text}");
        assert!(text.contains("snapshotter = \"overlayfs\""), "{text}");
        assert!(is_installed(&text).unwrap());
        let doc: DocumentMut = text.parse().unwrap();
        let runtimes = &doc["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"];
        assert_eq!(
            runtimes["virtshim"]["pod_annotations"]
                .as_array()
                .unwrap()
                .get(0)
                .and_then(|v| v.as_str()),
            Some("virtshim.io/*")
        );
        // runc stays defined: a runtimes table replaces containerd's built-in one.
        assert_eq!(
            runtimes["runc"]["runtime_type"].as_str(),
            Some("io.containerd.runc.v2")
        );
        // A second install changes nothing (no needless containerd restart).
        let (again, changed) = install(&text).unwrap();
        assert!(!changed, "{again}");
        assert_eq!(again, text);
    }

    #[test]
    fn configure_sets_a_local_sandbox_image_and_the_oom_setting_once() {
        let settings = NodeSettings {
            sandbox_image: Some("localhost/virtshim/pause:v1"),
            restrict_oom_score_adj: true,
        };
        let text = "# the node's own\nversion = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"registry.k8s.io/pause:3.6\"\n";
        let (new, changed, image) = configure(text, &settings).unwrap();
        assert!(changed);
        assert_eq!(image.as_deref(), Some("localhost/virtshim/pause:v1"));
        assert!(new.starts_with("# the node's own\n"), "{new}");
        let doc: DocumentMut = new.parse().unwrap();
        let cri = &doc["plugins"]["io.containerd.grpc.v1.cri"];
        assert_eq!(
            cri["sandbox_image"].as_str(),
            Some("localhost/virtshim/pause:v1")
        );
        assert_eq!(cri["restrict_oom_score_adj"].as_bool(), Some(true));
        // Again: nothing to change.
        let (again, changed, _) = configure(&new, &settings).unwrap();
        assert!(!changed);
        assert_eq!(again, new);

        // An image the administrator chose stays.
        let chosen = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"mirror.example/pause:3.9\"\n";
        let (_, _, image) = configure(chosen, &settings).unwrap();
        assert_eq!(image.as_deref(), Some("mirror.example/pause:3.9"));

        // Version 3 keeps them elsewhere.
        let (v3, _, _) = configure("version = 3\n", &settings).unwrap();
        let doc: DocumentMut = v3.parse().unwrap();
        assert_eq!(
            doc["plugins"]["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"].as_str(),
            Some("localhost/virtshim/pause:v1")
        );
        assert_eq!(
            doc["plugins"]["io.containerd.cri.v1.runtime"]["restrict_oom_score_adj"].as_bool(),
            Some(true)
        );
        assert!(matches!(
            configure("version = 9\n", &settings),
            Err(ConfigError::Version(9))
        ));
    }

    #[test]
    fn uninstall_removes_only_the_runtime() {
        let (installed, _) = install(DEBIAN).unwrap();
        let (text, changed) = uninstall(&installed).unwrap();
        assert!(changed);
        assert!(!is_installed(&text).unwrap());
        assert!(text.contains("restrict_oom_score_adj = true"));
        assert!(text.contains("io.containerd.runc.v2"));
        let (_, changed) = uninstall(&text).unwrap();
        assert!(!changed);
        let (_, changed) = uninstall(DEBIAN).unwrap();
        assert!(!changed);
    }

    #[test]
    fn versions_and_odd_files() {
        // containerd 2.x
        let (text, _) = install("version = 3\n").unwrap();
        assert!(
            text.contains(
                "[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.virtshim]"
            ),
            "{text}"
        );
        assert!(is_installed(&text).unwrap());
        // An empty file becomes version 2, which containerd reads with these names.
        let (text, _) = install("").unwrap();
        assert!(text.starts_with("version = 2\n"), "{text}");
        assert!(text.contains("io.containerd.grpc.v1.cri"), "{text}");
        let settings = NodeSettings {
            sandbox_image: Some("localhost/virtshim/pause:v1"),
            restrict_oom_score_adj: true,
        };
        let (text, _, _) = configure("", &settings).unwrap();
        assert!(text.starts_with("version = 2\n"), "{text}");
        // One that says something keeps its version (none: 1).
        let (text, _) = install("# comment\n[plugins]\n").unwrap();
        assert!(!text.contains("version"), "{text}");
        // A custom default runtime is kept, and defined when missing.
        let (text, _) = install(
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\ndefault_runtime_name = \"crun\"\n",
        )
        .unwrap();
        assert!(text.contains("runtimes.crun]"), "{text}");
        // Errors name the problem.
        assert!(matches!(
            install("version = 9\n"),
            Err(ConfigError::Version(9))
        ));
        assert!(matches!(install("version = "), Err(ConfigError::Parse(_))));
        let err = install("version = 2\nplugins = 3\n").unwrap_err();
        assert_eq!(err.to_string(), "plugins is not a table");
    }
}
