#!/usr/bin/env bash
# Recreates shared/vendor/candle-core: crates.io's candle-core 0.11.1 (library sources, manifest, licence,
# readme) with candle-core.patch applied. Needs that crate in cargo's cache (~/.cargo/registry/src): build
# any project depending on candle-core 0.11.1 without the patch first. For a newer candle, set VERSION,
# and mend the patch until it applies (README.md here says what it changes and why).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=${VERSION:-0.11.1}
src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"candle-core-$version" 2>/dev/null | head -1 || true)
if [ -z "$src" ]; then
    echo "candle-core $version is not in cargo's registry cache (${CARGO_HOME:-$HOME/.cargo}/registry/src)" >&2
    exit 1
fi
tmp=$(mktemp -d "$here/.candle-core.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cp -r "$src/src" "$src/Cargo.toml" "$src/LICENSE" "$src/README.md" "$tmp/"
(cd "$tmp" && patch -p1 --quiet --no-backup-if-mismatch <"$here/candle-core.patch")
rm -rf "$here/candle-core"
mv "$tmp" "$here/candle-core"
trap - EXIT
echo "shared/vendor/candle-core: candle-core $version from $src, patched" >&2
