//! Checks for names and paths that end up in pods, libvirt XML and file systems.

/// An RFC 1123 label: what Kubernetes requires of container names and what a disk or volume
/// name must be, since each may become a container `volume<name>` and a file name in the shim.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An RFC 1123 subdomain: what Kubernetes requires of object names (Secrets, PVCs).
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Why a path inside an image is unacceptable, if it is: it must be absolute, without `..`,
/// `.` or empty components, and without control characters. The shim still resolves it inside
/// the image's root without following symlinks out; this check keeps the obvious escapes out of
/// the API in the first place.
pub(crate) fn image_path_problem(path: &str) -> Option<&'static str> {
    if !path.starts_with('/') {
        return Some("must be an absolute path");
    }
    if path.len() > 4096 {
        return Some("must be at most 4096 bytes");
    }
    if path.chars().any(char::is_control) {
        return Some("must not contain control characters");
    }
    if path[1..]
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Some("must be a normalized path without '.', '..' or empty components");
    }
    None
}

/// Printable ASCII without control characters, at most `max` bytes.
pub(crate) fn is_printable(s: &str, max: usize) -> bool {
    s.len() <= max && s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["a", "disk0", "cloud-init", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            "a.b",
            &"a".repeat(64),
            "a\"b",
            "<x>",
        ] {
            assert!(!is_dns_label(bad), "{bad}");
        }
        assert!(is_dns_subdomain("my.secret-1"));
        assert!(!is_dns_subdomain("my..secret"));
    }

    #[test]
    fn image_paths() {
        assert_eq!(image_path_problem("/disk/img.qcow2"), None);
        assert_eq!(image_path_problem("/boot/vmlinuz-virt"), None);
        for bad in [
            "disk.img",
            "/disk/../etc/shadow",
            "/disk/./x",
            "//x",
            "/x/",
            "/a\nb",
            "/..",
        ] {
            assert!(image_path_problem(bad).is_some(), "{bad}");
        }
    }
}
