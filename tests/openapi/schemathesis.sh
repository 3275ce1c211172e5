#!/usr/bin/env bash
# Runs schemathesis (from PyPI) against the real agent on its simulator, with a token set:
# every response must match docs/openapi.yaml, and no 5xx may come from the agent itself
# (the relayed upstream answers of .../upgrade and .../imagepull are the upstream's own).
# Usage: tests/openapi/schemathesis.sh [SECONDS]   (time budget per pass, default 60)
set -euo pipefail
cd "$(dirname "$0")/../.."
budget=${1:-60}

venv=${SCHEMATHESIS_VENV:-target/schemathesis-venv}
if [ ! -x "$venv/bin/st" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'schemathesis==4.32.5'
fi

cargo build -p yurt-ota --locked --release --quiet
work=$(mktemp -d)
agent=
cleanup() {
  [ -n "$agent" ] && kill "$agent" 2>/dev/null && wait "$agent" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

token=st-$RANDOM$RANDOM
printf '%s\n' "$token" >"$work/token"
chmod 600 "$work/token"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir "$work/state"
cat >"$work/config.toml" <<TOML
[upstream]
kind = "sim"
[api]
listen = "127.0.0.1:$port"
token_file = "$work/token"
[state]
dir = "$work/state"
TOML
./target/release/yurt-ota run --config "$work/config.toml" 2>"$work/agent.log" &
agent=$!
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/v1/readyz" >/dev/null && break
  sleep 0.1
done

st() {
  "$venv/bin/st" run docs/openapi.yaml --url "http://127.0.0.1:$port" \
    -H "Authorization: Bearer $token" --max-time "$budget" --workers 1 \
    --suppress-health-check all --warnings off "$@"
}
# Not run: positive_data_acceptance, since a schema cannot say "a duration above zero and at
# most 7 days" (the negative check still runs); use_after_free and ensure_resource_availability,
# stateful heuristics for REST resources that do not fit holds keyed by a name the caller picks.
skip=positive_data_acceptance,use_after_free,ensure_resource_availability
echo "== schemathesis: the agent's own routes, every check"
st --checks all --exclude-checks "$skip" \
  --exclude-path-regex '/(upgrade|imagepull)$'
echo "== schemathesis: the relayed routes (upstream 5xx are YurtHub's own answers)"
st --checks all --exclude-checks "not_a_server_error,$skip" \
  --include-path-regex '/(upgrade|imagepull)$'
kill -TERM "$agent"
wait "$agent" || { echo "agent exited non-zero on SIGTERM"; cat "$work/agent.log"; exit 1; }
agent=
if grep -q 'panicked' "$work/agent.log"; then
  echo "the agent logged a panic:"; grep -n 'panicked' "$work/agent.log"; exit 1
fi
echo "schemathesis: passed"
