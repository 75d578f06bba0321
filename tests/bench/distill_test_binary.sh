# Sourced by the benchmarks that run an ignored test of distill's unit-test binary: builds it in release with
# $CARGO and sets BIN to its path ($PYTHON reads cargo's JSON messages).
printf '\n== %s\n' "$CARGO test -p distill --release --no-run" >&2
BIN="$($CARGO test -p distill --release --no-run --message-format=json |
    "$PYTHON" -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "distill" and m.get("executable") \
            and m["profile"]["test"]:
        print(m["executable"])
')"
[[ -x "$BIN" ]] || { echo "no distill test binary" >&2; exit 1; }
