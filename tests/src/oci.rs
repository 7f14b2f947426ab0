//! Writes small OCI images as image-layout tarballs that `ctr images import` accepts.
//!
//! There is no registry and no Docker engine here, so the tests make their own images: one
//! uncompressed layer holding a few host files (typically `/bin/busybox` from busybox-static),
//! a config with entrypoint and command, and an `index.json` whose manifest carries both
//! `io.containerd.image.name` (the full name containerd stores the image under) and
//! `org.opencontainers.image.ref.name` (the tag, for other OCI tools). Output is deterministic:
//! same inputs, same bytes, same digests — times are zero, owners root, entries sorted.

use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Where Debian's busybox-static puts its binary.
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// What can go wrong making an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {} for the image: {source}", path.display())]
    ReadSource {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image path {dest:?} must be absolute, without `.` or `..`")]
    BadDestination { dest: String },
    #[error("cannot write image tarball {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One file of the layer.
#[derive(Debug, Clone)]
struct LayerFile {
    contents: Vec<u8>,
    mode: u32,
    /// Set for a symbolic link: its target, as written (it may point anywhere).
    link: Option<String>,
}

/// A one-layer image to write with [`OciImage::write_tar`].
#[derive(Debug, Clone)]
pub struct OciImage {
    name: String,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<String>,
    /// Keyed by the path inside the image, relative (`bin/busybox`), so the layer's order is
    /// the map's order.
    files: BTreeMap<String, LayerFile>,
}

impl OciImage {
    /// An empty image named `name` (`localhost/virtshim/pause:1`: give the registry part, or
    /// containerd's CRI normalizes the name to `docker.io/library/…`).
    pub fn new(name: &str) -> Self {
        OciImage {
            name: name.to_string(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            files: BTreeMap::new(),
        }
    }

    /// The image's full name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds the host file `src` as `dest` (absolute, inside the image) with permissions `mode`.
    pub fn add_file(self, src: impl AsRef<Path>, dest: &str, mode: u32) -> Result<Self, Error> {
        let src = src.as_ref();
        let contents = std::fs::read(src).map_err(|source| Error::ReadSource {
            path: src.to_path_buf(),
            source,
        })?;
        self.add_bytes(dest, contents, mode)
    }

    /// Adds a file holding `contents` as `dest` (absolute, inside the image).
    pub fn add_bytes(mut self, dest: &str, contents: Vec<u8>, mode: u32) -> Result<Self, Error> {
        let relative = relative_path(dest)?;
        self.files.insert(
            relative,
            LayerFile {
                contents,
                mode,
                link: None,
            },
        );
        Ok(self)
    }

    /// Adds a symbolic link `dest` pointing at `target`; hostile-image tests point these out
    /// of the image (`/disk/x.img -> /etc/hostname`).
    pub fn add_symlink(mut self, dest: &str, target: &str) -> Result<Self, Error> {
        let relative = relative_path(dest)?;
        self.files.insert(
            relative,
            LayerFile {
                contents: Vec::new(),
                mode: 0o777,
                link: Some(target.to_string()),
            },
        );
        Ok(self)
    }

    /// The image's entrypoint (`ENTRYPOINT`).
    pub fn entrypoint<S: AsRef<str>>(mut self, args: &[S]) -> Self {
        self.entrypoint = args.iter().map(|a| a.as_ref().to_string()).collect();
        self
    }

    /// The image's default arguments (`CMD`).
    pub fn cmd<S: AsRef<str>>(mut self, args: &[S]) -> Self {
        self.cmd = args.iter().map(|a| a.as_ref().to_string()).collect();
        self
    }

    /// Writes the image as an OCI image-layout tarball at `out`.
    pub fn write_tar(&self, out: impl AsRef<Path>) -> Result<(), Error> {
        let out = out.as_ref();
        let write_error = |source| Error::Write {
            path: out.to_path_buf(),
            source,
        };
        let blobs = self.blobs().map_err(write_error)?;
        let file = File::create(out).map_err(write_error)?;
        let mut archive = tar::Builder::new(BufWriter::new(file));
        for dir in ["blobs/", "blobs/sha256/"] {
            append(&mut archive, dir, tar::EntryType::Directory, 0o755, &[])
                .map_err(write_error)?;
        }
        for blob in [&blobs.layer, &blobs.config, &blobs.manifest] {
            let path = format!("blobs/sha256/{}", blob.hex);
            append(
                &mut archive,
                &path,
                tar::EntryType::Regular,
                0o644,
                &blob.bytes,
            )
            .map_err(write_error)?;
        }
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": blobs.manifest.digest(),
                "size": blobs.manifest.bytes.len(),
                "platform": { "architecture": oci_arch(), "os": "linux" },
                "annotations": {
                    "io.containerd.image.name": self.name,
                    "org.opencontainers.image.ref.name": tag(&self.name),
                },
            }],
        });
        let layout = json!({ "imageLayoutVersion": "1.0.0" });
        append(
            &mut archive,
            "index.json",
            tar::EntryType::Regular,
            0o644,
            &to_json(&index),
        )
        .map_err(write_error)?;
        append(
            &mut archive,
            "oci-layout",
            tar::EntryType::Regular,
            0o644,
            &to_json(&layout),
        )
        .map_err(write_error)?;
        let mut writer = archive.into_inner().map_err(write_error)?;
        writer.flush().map_err(write_error)
    }

    /// The layer, config and manifest blobs.
    fn blobs(&self) -> std::io::Result<Blobs> {
        let layer = Blob::new(self.layer()?);
        let config = json!({
            "architecture": oci_arch(),
            "os": "linux",
            "config": {
                "Env": self.env,
                "Entrypoint": self.entrypoint,
                "Cmd": self.cmd,
                "WorkingDir": "/",
            },
            "rootfs": { "type": "layers", "diff_ids": [layer.digest()] },
            "history": [{ "created_by": "virtshim-tests oci.rs" }],
        });
        let config = Blob::new(to_json(&config));
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config.digest(),
                "size": config.bytes.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer.digest(),
                "size": layer.bytes.len(),
            }],
        });
        let manifest = Blob::new(to_json(&manifest));
        Ok(Blobs {
            layer,
            config,
            manifest,
        })
    }

    /// The layer tar: every parent folder once, then its files, in path order.
    fn layer(&self) -> std::io::Result<Vec<u8>> {
        let mut dirs = std::collections::BTreeSet::new();
        for path in self.files.keys() {
            let mut parent = Path::new(path).parent();
            while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
                dirs.insert(format!("{}/", dir.display()));
                parent = dir.parent();
            }
        }
        // Folders and files in one sorted sequence, so a folder precedes what it holds.
        let mut entries: BTreeMap<&str, Option<&LayerFile>> = BTreeMap::new();
        for dir in &dirs {
            entries.insert(dir, None);
        }
        for (path, file) in &self.files {
            entries.insert(path, Some(file));
        }
        let mut layer = tar::Builder::new(Vec::new());
        for (path, file) in entries {
            match file {
                None => append(&mut layer, path, tar::EntryType::Directory, 0o755, &[])?,
                Some(LayerFile {
                    link: Some(target), ..
                }) => {
                    let mut header = tar::Header::new_gnu();
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    header.set_mtime(0);
                    header.set_uid(0);
                    header.set_gid(0);
                    layer.append_link(&mut header, path, target)?;
                }
                Some(f) => append(
                    &mut layer,
                    path,
                    tar::EntryType::Regular,
                    f.mode,
                    &f.contents,
                )?,
            }
        }
        layer.into_inner()
    }
}

/// A content-addressed blob.
#[derive(Debug)]
struct Blob {
    bytes: Vec<u8>,
    hex: String,
}

impl Blob {
    fn new(bytes: Vec<u8>) -> Self {
        let hex = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Blob { bytes, hex }
    }

    fn digest(&self) -> String {
        format!("sha256:{}", self.hex)
    }
}

#[derive(Debug)]
struct Blobs {
    layer: Blob,
    config: Blob,
    manifest: Blob,
}

/// One tar entry with everything that varies between machines (times, owners) fixed.
fn append<W: Write>(
    archive: &mut tar::Builder<W>,
    path: &str,
    kind: tar::EntryType,
    mode: u32,
    data: &[u8],
) -> std::io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(data.len() as u64);
    archive.append_data(&mut header, path, data)
}

fn to_json(value: &serde_json::Value) -> Vec<u8> {
    // Serializing a `Value` cannot fail: its keys are strings.
    serde_json::to_vec(value).unwrap_or_default()
}

/// `dest` without its leading `/`, refusing anything that is not a plain absolute path.
fn relative_path(dest: &str) -> Result<String, Error> {
    let bad = || Error::BadDestination {
        dest: dest.to_string(),
    };
    if !dest.starts_with('/') || dest.ends_with('/') {
        return Err(bad());
    }
    let parts: Vec<&str> = dest.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() || parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(bad());
    }
    Ok(parts.join("/"))
}

/// The tag of an image name (`1` of `localhost/virtshim/pause:1`), `latest` when it has none.
fn tag(name: &str) -> &str {
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.rsplit_once(':') {
        Some((_, tag)) if !tag.is_empty() => tag,
        _ => "latest",
    }
}

/// This machine's architecture as OCI names it.
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// An image holding only the host's static busybox as `/bin/busybox`, running `entrypoint`.
pub fn busybox_image(name: &str, entrypoint: &[&str]) -> Result<OciImage, Error> {
    Ok(OciImage::new(name)
        .add_file(HOST_BUSYBOX, "/bin/busybox", 0o755)?
        .entrypoint(entrypoint))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn entries(tar_bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut archive = tar::Archive::new(tar_bytes);
        let mut out = Vec::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let path = entry.path().expect("path").display().to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("read");
            out.push((path, data));
        }
        out
    }

    fn image() -> OciImage {
        OciImage::new("localhost/virtshim/test:7")
            .add_bytes("/bin/tool", b"#!tool".to_vec(), 0o755)
            .expect("add")
            .add_bytes("/etc/deep/conf", b"x=1".to_vec(), 0o644)
            .expect("add")
            .entrypoint(&["/bin/tool", "run"])
    }

    #[test]
    fn tarball_is_a_deterministic_image_layout_with_both_name_annotations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a.tar"), dir.path().join("b.tar"));
        image().write_tar(&a).expect("write a");
        image().write_tar(&b).expect("write b");
        let bytes = std::fs::read(&a).expect("read a");
        assert_eq!(
            bytes,
            std::fs::read(&b).expect("read b"),
            "not deterministic"
        );

        let files = entries(&bytes);
        let find = |name: &str| {
            files
                .iter()
                .find(|(p, _)| p == name)
                .map(|(_, d)| d.clone())
                .unwrap_or_else(|| panic!("{name} missing"))
        };
        let index: serde_json::Value = serde_json::from_slice(&find("index.json")).expect("json");
        let manifest = &index["manifests"][0];
        assert_eq!(
            manifest["annotations"]["io.containerd.image.name"],
            "localhost/virtshim/test:7"
        );
        assert_eq!(
            manifest["annotations"]["org.opencontainers.image.ref.name"],
            "7"
        );

        // Every digest names the blob that holds those bytes.
        let blob = |digest: &serde_json::Value| {
            let digest = digest.as_str().expect("digest");
            let data = find(&format!("blobs/sha256/{}", &digest["sha256:".len()..]));
            assert_eq!(Blob::new(data.clone()).digest(), digest);
            data
        };
        let manifest: serde_json::Value =
            serde_json::from_slice(&blob(&manifest["digest"])).expect("manifest");
        let config: serde_json::Value =
            serde_json::from_slice(&blob(&manifest["config"]["digest"])).expect("config");
        assert_eq!(config["config"]["Entrypoint"], json!(["/bin/tool", "run"]));
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            manifest["layers"][0]["digest"]
        );

        let layer = entries(&blob(&manifest["layers"][0]["digest"]));
        let paths: Vec<_> = layer.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            ["bin/", "bin/tool", "etc/", "etc/deep/", "etc/deep/conf"]
        );
        assert_eq!(layer[1].1, b"#!tool");
    }

    #[test]
    fn destinations_must_be_plain_absolute_paths() {
        for bad in ["bin/x", "/", "/a/../b", "/a/./b", "/dir/"] {
            assert!(
                OciImage::new("n")
                    .add_bytes(bad, Vec::new(), 0o644)
                    .is_err(),
                "{bad:?} accepted"
            );
        }
        assert_eq!(relative_path("/a//b").expect("ok"), "a/b");
    }

    #[test]
    fn tags_come_from_the_last_path_part() {
        assert_eq!(tag("localhost/virtshim/pause:1"), "1");
        assert_eq!(tag("localhost:5000/virtshim/pause"), "latest");
        assert_eq!(tag("busybox"), "latest");
    }
}
