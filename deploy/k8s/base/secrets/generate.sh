#!/usr/bin/env bash
# Writes the pool's tokens for deploy/k8s (the execution-node-tokens Secret is made from these files):
#   auth.json      the coordinator's tokens file (docs/api.md "Authentication"), SHA-256 digests only
#   node-token     the `node` join token the node pods send
#   refiner-token  the `refiner` token Prometheus scrapes /metrics with
#   admin-token    the `admin` token for you; it is NOT put in the Secret (auth.json holds only its digest)
# Each token is 32 random bytes (openssl rand), hex. Files are mode 0600 and git-ignored.
#   bash deploy/k8s/secrets/generate.sh [DIR]     (default: this folder; refuses to overwrite existing tokens)
set -euo pipefail
dir="${1:-$(dirname "$0")}"
mkdir -p "$dir"
for f in auth.json node-token refiner-token admin-token; do
  if [ -e "$dir/$f" ]; then
    echo "generate.sh: $dir/$f exists; not overwriting tokens in use (delete the four files to make new ones)." >&2
    exit 1
  fi
done
command -v openssl >/dev/null 2>&1 || { echo "generate.sh: needs openssl (apt-get install -y openssl)." >&2; exit 1; }
umask 077
token() { openssl rand -hex 32; }
digest() { printf '%s' "$1" | openssl dgst -sha256 -r | cut -d' ' -f1; }
admin=$(token)
node=$(token)
refiner=$(token)
printf '%s' "$admin" >"$dir/admin-token"
printf '%s' "$node" >"$dir/node-token"
printf '%s' "$refiner" >"$dir/refiner-token"
cat >"$dir/auth.json" <<JSON
{ "tokens": [
  { "sha256": "$(digest "$admin")", "roles": ["admin"] },
  { "sha256": "$(digest "$node")", "roles": ["node"] },
  { "sha256": "$(digest "$refiner")", "roles": ["refiner"] }
] }
JSON
echo "Tokens written to $dir (auth.json, node-token, refiner-token; admin-token is yours, keep it safe)."
