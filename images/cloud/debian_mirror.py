#!/usr/bin/env python3
"""Prints the Debian archive debootstrap should use: $DEBIAN_MIRROR when set, else the first
Debian main archive in this machine's own apt sources, in apt's order: /etc/apt/sources.list
(one-line `deb` entries), then /etc/apt/sources.list.d/*.list and *.sources (deb822 `URIs:`),
by file name. No mirror is built into the project.

A "Debian main archive" is an enabled `deb` (not `deb-src`) source with the `main` component,
an http, https or file URI, and a plain Debian suite (a code name such as bookworm, or stable,
testing, unstable): the security, updates, backports and debug archives, and third-party
repositories, are skipped.

Exit status 1, with a message saying what to set, when there is none. APT_ETC (default
/etc/apt) is for tests.
"""

import glob
import os
import sys

# Debian's code names and suite aliases (a third-party repository's "nodistro" or "stable
# main" of some vendor is not Debian; vendors rarely use these names).
DEBIAN_SUITES = {
    "buzz", "rex", "bo", "hamm", "slink", "potato", "woody", "sarge", "etch", "lenny",
    "squeeze", "wheezy", "jessie", "stretch", "buster", "bullseye", "bookworm", "trixie",
    "forky", "duke", "sid", "oldoldstable", "oldstable", "stable", "testing", "unstable",
}


def one_line_entries(path):
    """(types, uris, suites, components, enabled) of each `deb …` line of a .list file."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            words = line.split()
            kind, rest = words[0], words[1:]
            # Options: `[arch=amd64 signed-by=…]`, possibly spread over several words.
            if rest and rest[0].startswith("["):
                while rest and not rest[0].endswith("]"):
                    rest = rest[1:]
                rest = rest[1:]
            if len(rest) < 2:
                continue
            yield [kind], [rest[0]], [rest[1]], rest[2:], True


def deb822_entries(path):
    """The same for each stanza of a deb822 .sources file."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    stanzas, fields, key = [], {}, None
    for raw in text.splitlines() + [""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if fields:
                stanzas.append(fields)
            fields, key = {}, None
            continue
        if raw[0] in " \t" and key:
            fields[key] += " " + raw.strip()
            continue
        if ":" in raw:
            key, value = raw.split(":", 1)
            key = key.strip().lower()
            fields[key] = value.strip()
    for s in stanzas:
        enabled = s.get("enabled", "yes").lower() not in ("no", "false", "0")
        yield (s.get("types", "").split(), s.get("uris", "").split(),
               s.get("suites", "").split(), s.get("components", "").split(), enabled)


def find(etc):
    files = []
    main = os.path.join(etc, "sources.list")
    if os.path.isfile(main):
        files.append(main)
    parts = os.path.join(etc, "sources.list.d")
    files += sorted(glob.glob(os.path.join(parts, "*.list")) +
                    glob.glob(os.path.join(parts, "*.sources")), key=os.path.basename)
    for path in files:
        entries = deb822_entries(path) if path.endswith(".sources") else one_line_entries(path)
        for types, uris, suites, components, enabled in entries:
            if not enabled or "deb" not in types or "main" not in components:
                continue
            if not any(s.rstrip("/") in DEBIAN_SUITES for s in suites):
                continue
            for uri in uris:
                if uri.split(":", 1)[0] in ("http", "https", "file"):
                    return uri.rstrip("/")
    return None


def main():
    override = os.environ.get("DEBIAN_MIRROR", "").strip()
    if override:
        print(override)
        return 0
    etc = os.environ.get("APT_ETC", "/etc/apt")
    mirror = find(etc)
    if mirror:
        print(mirror)
        return 0
    print(f"no Debian main archive in this machine's apt sources ({etc}/sources.list, "
          f"{etc}/sources.list.d/*.sources or *.list): set DEBIAN_MIRROR to the URL of a "
          "Debian archive (the folder holding dists/ and pool/)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
