#!/usr/bin/env python3
"""Writes the guest's busybox initramfs (an xz-compressed newc cpio archive).

No root, no mknod and no cpio binary are needed: the archive is written directly, device
nodes included. The output is deterministic (fixed mtimes, uid/gid 0, sorted entries, xz
with fixed settings), so the same inputs give byte-identical archives.

xz as the kernel wants it (CRC32 check, LZMA2 with a 1 MiB dictionary, as the kernel's
Documentation/staging/xz.rst advises): about a fifth smaller than gzip -9, and the kernel's
decoder then needs only a 1 MiB dictionary while it unpacks, which matters in a 64 MiB guest.

Usage:
  mkinitramfs.py --kver KVER [--moddir /lib/modules] --busybox /bin/busybox \
                 --rootfs DIR --module NAME [--module NAME ...] OUT.cpio.gz

Modules are resolved with KVER's modules.dep; the archive holds the resolved .ko files under
/lib/modules/KVER/, a trimmed modules.dep (so busybox modprobe works too), and
/etc/modules.load listing the files in dependency order (init insmods them in that order).
"""
import argparse, io, lzma, os, stat, struct, subprocess, sys

MTIME = 0


class Cpio:
    def __init__(self):
        self.buf = io.BytesIO()
        self.ino = 1000
        self.entries = {}  # path -> (mode, data, rdev)

    def add(self, path, mode, data=b"", rdev=(0, 0)):
        path = path.strip("/")
        # Create parents implicitly.
        parts = path.split("/")
        for i in range(1, len(parts)):
            p = "/".join(parts[:i])
            self.entries.setdefault(p, (stat.S_IFDIR | 0o755, b"", (0, 0)))
        self.entries[path] = (mode, data, rdev)

    def dir(self, path, perm=0o755):
        self.add(path, stat.S_IFDIR | perm)

    def file(self, path, data, perm=0o644):
        self.add(path, stat.S_IFREG | perm, data)

    def symlink(self, path, target):
        self.add(path, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, path, major, minor, perm=0o600):
        self.add(path, stat.S_IFCHR | perm, b"", (major, minor))

    def _write(self, name, mode, data, rdev):
        self.ino += 1
        nlink = 2 if stat.S_ISDIR(mode) else 1
        namez = name.encode() + b"\0"
        hdr = "070701" + "".join("%08x" % v for v in (
            self.ino, mode, 0, 0, nlink, MTIME, len(data), 0, 0, rdev[0], rdev[1], len(namez), 0))
        out = self.buf
        out.write(hdr.encode() + namez)
        out.write(b"\0" * ((4 - (110 + len(namez)) % 4) % 4))
        out.write(data)
        out.write(b"\0" * ((4 - len(data) % 4) % 4))

    def bytes(self):
        for name in sorted(self.entries):  # parents sort before their children
            mode, data, rdev = self.entries[name]
            self._write(name, mode, data, rdev)
        self._write("TRAILER!!!", 0, b"", (0, 0))
        raw = self.buf.getvalue()
        raw += b"\0" * ((512 - len(raw) % 512) % 512)
        return raw


def is_static_elf(path):
    """True if the ELF file at path has no PT_INTERP program header (no dynamic loader)."""
    with open(path, "rb") as f:
        h = f.read(64)
        if h[:4] != b"\x7fELF" or h[4] != 2:
            return False
        order = "<" if h[5] == 1 else ">"
        phoff, = struct.unpack_from(order + "Q", h, 32)
        phentsize, phnum = struct.unpack_from(order + "HH", h, 54)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            ptype, = struct.unpack(order + "I", f.read(4))
            if ptype == 3:  # PT_INTERP
                return False
    return True


def norm(name):
    return name.replace("-", "_")


def resolve_modules(moddir, kver, wanted):
    """Returns module paths (relative to moddir/kver) in load order, plus their modules.dep lines."""
    depfile = os.path.join(moddir, kver, "modules.dep")
    deps, byname = {}, {}
    with open(depfile) as f:
        for line in f:
            if ":" not in line:
                continue
            mod, rest = line.split(":", 1)
            deps[mod] = rest.split()
            base = os.path.basename(mod).split(".ko")[0]
            byname[norm(base)] = mod
    builtin = set()
    bpath = os.path.join(moddir, kver, "modules.builtin")
    if os.path.exists(bpath):
        with open(bpath) as f:
            builtin = {norm(os.path.basename(l.strip()).split(".ko")[0]) for l in f}
    order, seen = [], set()

    def visit(mod):
        if mod in seen:
            return
        seen.add(mod)
        # modules.dep lists dependencies so that the last one must be loaded first
        for d in reversed(deps.get(mod, [])):
            visit(d)
        order.append(mod)

    missing = []
    for w in wanted:
        m = byname.get(norm(w))
        if m is None:
            if norm(w) in builtin:
                continue
            missing.append(w)
            continue
        visit(m)
    if missing:
        sys.exit("mkinitramfs: modules not found for %s: %s" % (kver, " ".join(missing)))
    return order, {m: deps[m] for m in order}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--kver", required=True)
    ap.add_argument("--moddir", default="/lib/modules")
    ap.add_argument("--busybox", default="/bin/busybox")
    ap.add_argument("--rootfs", required=True, help="directory copied into the archive")
    ap.add_argument("--module", action="append", default=[])
    ap.add_argument("--quiet", action="store_true", help="print nothing")
    a = ap.parse_args()

    c = Cpio()
    for d in ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "run",
              "tmp", "var/log", "var/run", "mnt", "root", "www"]:
        c.dir(d)
    c.dir("tmp", 0o1777)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3, 0o666)
    c.chardev("dev/ttyS0", 4, 64)

    if not is_static_elf(a.busybox):
        sys.exit("mkinitramfs: %s is not a static binary (apt-get install busybox-static)" % a.busybox)
    with open(a.busybox, "rb") as f:
        c.file("bin/busybox", f.read(), 0o755)
    applets = subprocess.run([a.busybox, "--list-full"], check=True, capture_output=True,
                             text=True).stdout.split()
    for ap_path in applets:
        if ap_path in ("bin/busybox", "linuxrc"):
            continue
        depth = ap_path.count("/")
        c.symlink(ap_path, "../" * depth + "bin/busybox")
    c.symlink("init", "bin/busybox")

    # The guest's own files (init scripts, configs).
    root = os.path.abspath(a.rootfs)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        if rel != ".":
            c.dir(rel)
        for fn in sorted(filenames):
            src = os.path.join(dirpath, fn)
            dst = os.path.normpath(os.path.join(rel, fn))
            with open(src, "rb") as f:
                data = f.read()
            c.file(dst, data, 0o755 if os.access(src, os.X_OK) else 0o644)

    order, deps = resolve_modules(a.moddir, a.kver, a.module)
    kdir = "lib/modules/%s" % a.kver
    for m in order:
        with open(os.path.join(a.moddir, a.kver, m), "rb") as f:
            c.file("%s/%s" % (kdir, m), f.read())
    c.file(kdir + "/modules.dep", "".join("%s: %s\n" % (m, " ".join(d)) for m, d in deps.items()).encode())
    c.file("etc/modules.load", "".join("/%s/%s\n" % (kdir, m) for m in order).encode())

    raw = c.bytes()
    tmp = a.out + ".tmp"
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": 1 << 20}]
    with open(tmp, "wb") as f:
        f.write(lzma.compress(raw, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, filters=filters))
    os.replace(tmp, a.out)
    if not a.quiet:
        print("initramfs: %d modules, %d KiB uncompressed, %d KiB compressed" % (
            len(order), len(raw) // 1024, os.path.getsize(a.out) // 1024))


if __name__ == "__main__":
    main()
