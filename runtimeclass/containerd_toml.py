#!/usr/bin/env python3
"""Reads and edits containerd's config.toml (version 2) by key path, for install-node.sh and
scripts/node-containerd.sh.

containerd 1.6 merges `imports` by replacing a plugin's whole table, so a drop-in holding a
runtime would wipe the node's other CRI settings: the runtime has to be written into
config.toml itself, as kata-deploy does. Python's tomllib reads; the small writer below writes
back (comments are not kept; a backup of the original is left beside it once).

  containerd_toml.py FILE get  'plugins."io.containerd.grpc.v1.cri".sandbox_image'
  containerd_toml.py FILE set  'plugins."io.containerd.grpc.v1.cri".restrict_oom_score_adj' true
  containerd_toml.py FILE del  'plugins."io.containerd.grpc.v1.cri".containerd.runtimes.virtshim'
VALUE is JSON (true, 2, "text", ["a"]); a bare word is taken as a string.
"""
import json, os, re, shutil, sys, tomllib

def split_path(path):
    parts, i = [], 0
    for m in re.finditer(r'"([^"]*)"|([^.]+)', path):
        parts.append(m.group(1) if m.group(1) is not None else m.group(2))
    return parts

BARE = re.compile(r'^[A-Za-z0-9_-]+$')

def key(k):
    return k if BARE.match(k) else json.dumps(k)

def value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(value(x) for x in v) + "]"
    raise ValueError(f"cannot write {v!r}")

def write_table(out, prefix, table):
    scalars = [(k, v) for k, v in table.items() if not isinstance(v, dict)]
    tables = [(k, v) for k, v in table.items() if isinstance(v, dict)]
    if prefix and (scalars or not tables):
        out.append("\n[" + ".".join(key(p) for p in prefix) + "]")
    for k, v in scalars:
        out.append(f"{'  ' * (len(prefix) > 0)}{key(k)} = {value(v)}")
    for k, v in tables:
        write_table(out, prefix + [k], v)

def dump(doc):
    out = []
    write_table(out, [], doc)
    return "\n".join(out).lstrip("\n") + "\n"

def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    path, op, keypath = sys.argv[1], sys.argv[2], split_path(sys.argv[3])
    doc = {}
    if os.path.exists(path):
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    doc.setdefault("version", 2)
    if doc["version"] != 2:
        sys.exit(f"{path}: config version {doc['version']} is not supported (need version = 2)")
    if op == "get":
        node = doc
        for p in keypath:
            if not isinstance(node, dict) or p not in node:
                return
            node = node[p]
        print(node if not isinstance(node, (dict, list, bool)) else json.dumps(node))
        return
    node = doc
    for p in keypath[:-1]:
        node = node.setdefault(p, {})
    if op == "set":
        raw = sys.argv[4]
        try:
            new = json.loads(raw)
        except json.JSONDecodeError:
            new = raw
        if node.get(keypath[-1]) == new:
            return
        node[keypath[-1]] = new
    elif op == "del":
        if keypath[-1] not in node:
            return
        del node[keypath[-1]]
    else:
        sys.exit(f"unknown operation {op}")
    if os.path.exists(path) and not os.path.exists(path + ".before-virtshim"):
        shutil.copy2(path, path + ".before-virtshim")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(dump(doc))
    os.replace(tmp, path)
    print("changed")

main()
