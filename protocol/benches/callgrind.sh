#!/bin/sh
# Instructions per call of Envelope::from_slice and Envelope::to_json on each bench frame
# (protocol/benches/json.rs), counted by callgrind: independent of the machine's load.
#
#   cargo bench -p protocol --bench json --profile loadtest --no-run
#   protocol/benches/callgrind.sh [BENCH_BINARY] [CALLS]
#
# Without BENCH_BINARY, the newest target/loadtest/deps/json-* is used. Only the loop
# (`run_parse` / `run_serialise`) is counted: building the frame and the process's start are not.
set -eu
bin=${1:-$(ls -t target/loadtest/deps/json-* | grep -v '\.d$' | head -1)}
calls=${2:-1000}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "binary: $bin, $calls calls each"
for frame in telemetry event locker_response seed_telemetry; do
    for what in parse serialise; do
        valgrind --tool=callgrind --callgrind-out-file="$out/cg" --collect-atstart=no \
            --toggle-collect="*json::run_$what*" "$bin" "$frame" "$what" "$calls" \
            >"$out/stdout" 2>"$out/stderr"
        ir=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$out/stderr")
        bytes=$(awk '{print $3}' "$out/stdout")
        echo "$frame $what ${bytes}B: $((ir / calls)) Ir/call"
    done
done
