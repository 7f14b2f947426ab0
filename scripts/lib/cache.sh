# shellcheck shell=bash
# The input-hash cache of the build scripts that do nothing when nothing they read has changed
# (images/guest/build.sh, images/cloud/build.sh, images/components/build.sh, cluster/build.sh).
# Sourced, not run. Each script says what its inputs are; this file makes them a key and keeps
# the key in a stamp file next to the outputs:
#
#   KEY=$({ echo "settings ..."; cache_files FILE...; cache_tree DIR; } | cache_key)
#   if cache_hit DIR/STAMP "$KEY" OUTPUT...; then echo "...: up to date"; exit 0; fi
#   cache_miss STAMP "what it builds" || exit 0
#   ... build the outputs ...
#   cache_stamp STAMP "$KEY"
#
# Files count by their contents only, never by their paths: a checkout elsewhere with the same
# contents has the same key.
#
# CACHE_DRY_RUN=1: a script only says what it would build; it builds nothing and leaves outputs
# and stamps as they are. What it does to learn its inputs still happens (guest: the small
# kernel's build and the EFI packages' download; components: cargo build and strip).

# The key of what is on stdin (the inputs as the script lists them): its sha256, in hex.
cache_key() {
  sha256sum | cut -d' ' -f1
}

# FILE...: each file's sha256, one a line, in the order given (contents, not names).
cache_files() {
  sha256sum "$@" | cut -d' ' -f1
}

# DIR: every file below DIR with its mode, then every file's contents, by path relative to DIR
# (a file added, removed, renamed, made executable or changed changes the key).
cache_tree() {
  (cd "$1" && find . -type f -printf '%p %m\n' | LC_ALL=C sort &&
    find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
}

# STAMP KEY [-x] OUTPUT...: whether the last build of these outputs was from the same inputs:
# STAMP holds KEY and every OUTPUT, a name in STAMP's directory, is a non-empty file (-x: and
# executable).
cache_hit() {
  local stamp=$1 key=$2 exec=
  shift 2
  if [ "${1:-}" = -x ]; then exec=1; shift; fi
  [ "$(cat "$stamp" 2>/dev/null)" = "$key" ] || return 1
  local dir output
  dir=$(dirname "$stamp")
  for output in "$@"; do
    [ -s "$dir/$output" ] || return 1
    [ -z "$exec" ] || [ -x "$dir/$output" ] || return 1
  done
}

# STAMP WHAT: a build of WHAT is starting. The stamp goes first, so that a build stopped
# half-way is never taken for a finished one. Under CACHE_DRY_RUN it says that WHAT would be
# built, keeps the stamp and fails: the caller skips the build.
cache_miss() {
  if [ -n "${CACHE_DRY_RUN:-}" ]; then
    echo "$2: would be built (CACHE_DRY_RUN)"
    return 1
  fi
  rm -f "$1"
}

# STAMP KEY: the outputs are in place, built from the inputs KEY names.
cache_stamp() {
  echo "$2" > "$1"
}
