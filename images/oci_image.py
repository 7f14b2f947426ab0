#!/usr/bin/env python3
"""Writes a one-layer OCI image-layout tarball for `ctr images import` (python3 stdlib only).

  oci_image.py --name localhost/virtshim/guest-kernel-boot:v1 \
      --add out/vmlinuz /boot/vmlinuz --add out/initrd.img /boot/initrd.img:0444 OUT.tar

--add SRC DEST[:MODE[:UID:GID]]  put file SRC at DEST in the layer (MODE octal, default: 0755
                                 if SRC is executable else 0644; owner default 0:0). Parent
                                 directories are created (0755, root).
--name NAME                      full image reference; recorded as the index annotation
                                 io.containerd.image.name (what `ctr images import` names the
                                 image, also in the k8s.io namespace where the CRI looks it up)
                                 and org.opencontainers.image.ref.name (the tag).
--entrypoint/--cmd/--env         optional image config; none by default.
--compress gzip|none             layer compression (default gzip).

The output is deterministic: fixed mtimes (--mtime, default 0), uid/gid as given, sorted
entries, gzip without timestamp, canonical JSON. The same inputs give the same image digest.
"""
import argparse, gzip, hashlib, io, json, os, shutil, stat, sys, tarfile, tempfile

CHUNK = 1 << 20


def canon(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class HashingWriter(io.RawIOBase):
    """File wrapper that hashes and counts what is written through it."""

    def __init__(self, f):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def writable(self):
        return True

    def write(self, b):
        self.h.update(b)
        self.n += len(b)
        return self.f.write(b)

    def digest(self):
        return "sha256:" + self.h.hexdigest()


def parse_add(src, spec):
    parts = spec.split(":")
    dest = parts[0]
    if not dest.startswith("/") or dest.endswith("/") or ".." in dest.split("/"):
        sys.exit("oci_image: DEST must be an absolute file path: %r" % spec)
    if len(parts) > 1 and parts[1]:
        mode = int(parts[1], 8)
    else:
        mode = 0o755 if os.access(src, os.X_OK) else 0o644
    uid = gid = 0
    if len(parts) == 4:
        uid, gid = int(parts[2]), int(parts[3])
    elif len(parts) not in (1, 2):
        sys.exit("oci_image: bad --add DEST[:MODE[:UID:GID]]: %r" % spec)
    if not os.path.isfile(src):
        sys.exit("oci_image: not a file: %s" % src)
    return dest.strip("/"), mode, uid, gid


def write_layer(adds, out, mtime):
    """Writes the uncompressed layer tar to file object `out`."""
    files = {}
    for src, dest, mode, uid, gid in adds:
        if dest in files:
            sys.exit("oci_image: %s added twice" % dest)
        files[dest] = (src, mode, uid, gid)
    dirs = set()
    for dest in files:
        p = dest.split("/")[:-1]
        for i in range(1, len(p) + 1):
            dirs.add("/".join(p[:i]))
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as t:
        for name in sorted(dirs | set(files)):
            ti = tarfile.TarInfo(name)
            ti.mtime, ti.uname, ti.gname = mtime, "", ""
            if name in files:
                src, mode, uid, gid = files[name]
                ti.type, ti.mode, ti.uid, ti.gid = tarfile.REGTYPE, mode, uid, gid
                ti.size = os.path.getsize(src)
                with open(src, "rb") as f:
                    t.addfile(ti, f)
            else:
                ti.type, ti.mode, ti.uid, ti.gid = tarfile.DIRTYPE, 0o755, 0, 0
                t.addfile(ti)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="output tarball")
    ap.add_argument("--name", required=True, help="image reference, e.g. localhost/x/y:v1")
    ap.add_argument("--add", nargs=2, action="append", default=[], metavar=("SRC", "DEST[:MODE[:UID:GID]]"))
    ap.add_argument("--entrypoint", nargs="*", default=None)
    ap.add_argument("--cmd", nargs="*", default=None)
    ap.add_argument("--env", action="append", default=[], metavar="K=V")
    ap.add_argument("--label", action="append", default=[], metavar="K=V", help="image config label")
    ap.add_argument("--compress", choices=["gzip", "none"], default="gzip")
    ap.add_argument("--mtime", type=int, default=0, help="mtime of all layer entries (default 0)")
    ap.add_argument("--arch", default="amd64")
    a = ap.parse_args()

    name = a.name
    last = name.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last:
        name += ":latest"
    tag = name.rsplit("/", 1)[-1].split("@", 1)[0].partition(":")[2] or "latest"

    adds = [(src,) + parse_add(src, spec) for src, spec in a.add]
    if not adds:
        sys.exit("oci_image: nothing to --add")

    outdir = os.path.dirname(os.path.abspath(a.out))
    with tempfile.TemporaryDirectory(dir=outdir, prefix=".oci-") as tmp:
        # 1. layer tar (diff_id = digest of the uncompressed tar)
        raw_path = os.path.join(tmp, "layer.tar")
        with open(raw_path, "wb") as f:
            hw = HashingWriter(f)
            write_layer(adds, hw, a.mtime)
            diff_id = hw.digest()
        # 2. the blob that is shipped (compressed or not)
        if a.compress == "gzip":
            blob_path = os.path.join(tmp, "layer.tar.gz")
            with open(blob_path, "wb") as f:
                hw = HashingWriter(f)
                with gzip.GzipFile(filename="", mode="wb", fileobj=hw, compresslevel=6, mtime=0) as g, \
                        open(raw_path, "rb") as r:
                    shutil.copyfileobj(r, g, CHUNK)
                layer_digest, layer_size = hw.digest(), hw.n
            layer_mt = "application/vnd.oci.image.layer.v1.tar+gzip"
        else:
            blob_path = raw_path
            layer_digest, layer_size = diff_id, os.path.getsize(raw_path)
            layer_mt = "application/vnd.oci.image.layer.v1.tar"

        cfg = {}
        if a.entrypoint is not None:
            cfg["Entrypoint"] = a.entrypoint
        if a.cmd is not None:
            cfg["Cmd"] = a.cmd
        if a.env:
            cfg["Env"] = a.env
        if a.label:
            cfg["Labels"] = dict(kv.split("=", 1) for kv in a.label)
        config = canon({
            "architecture": a.arch, "os": "linux", "config": cfg,
            "created": "1970-01-01T00:00:00Z",
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "images/oci_image.py"}],
        })
        manifest = canon({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config)},
            "layers": [{"mediaType": layer_mt, "digest": layer_digest, "size": layer_size}],
        })
        manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        index = canon({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest, "size": len(manifest),
                "platform": {"architecture": a.arch, "os": "linux"},
                "annotations": {"io.containerd.image.name": name,
                                "org.opencontainers.image.ref.name": tag},
            }],
        })

        members = [("oci-layout", canon({"imageLayoutVersion": "1.0.0"})), ("index.json", index),
                   ("blobs/sha256/" + manifest_digest[7:], manifest),
                   ("blobs/sha256/" + hashlib.sha256(config).hexdigest(), config),
                   ("blobs/sha256/" + layer_digest[7:], blob_path)]
        tmp_out = os.path.join(tmp, "out.tar")
        with tarfile.open(tmp_out, "w", format=tarfile.PAX_FORMAT) as t:
            for d in ("blobs", "blobs/sha256"):
                ti = tarfile.TarInfo(d)
                ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, a.mtime
                t.addfile(ti)
            for mname, content in sorted(members):
                ti = tarfile.TarInfo(mname)
                ti.mode, ti.mtime = 0o644, a.mtime
                if isinstance(content, bytes):
                    ti.size = len(content)
                    t.addfile(ti, io.BytesIO(content))
                else:
                    ti.size = os.path.getsize(content)
                    with open(content, "rb") as f:
                        t.addfile(ti, f)
        os.replace(tmp_out, a.out)
    print("%s: %s manifest %s (layer %s, %d bytes)" % (a.out, name, manifest_digest, layer_digest, layer_size))


if __name__ == "__main__":
    main()
