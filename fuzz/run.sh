#!/usr/bin/env bash
# Runs the fuzz targets for SECONDS each, one after another: `fuzz/run.sh SECONDS [TARGET…]`
# (all five when none is named). Each starts from the committed seeds in corpus/<target>/ and
# keeps what it discovers in target/corpus/<target>/ (never committed); a crash stops it with
# the input saved under artifacts/<target>/ and this script failing. The last lines of each
# run (executions, corpus size) are kept in target/logs/<target>.log.
#
# cargo-fuzz passes rustc flags that stable Rust takes only with RUSTC_BOOTSTRAP=1 (there is
# no nightly toolchain here). No sanitizer (`-s none`): the code under test is safe Rust, and
# it runs several times faster; debug assertions are on (`-a`), so an overflow is a crash.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

seconds=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(request_bodies config signatures subscriptions state_machine)
fi
export RUSTC_BOOTSTRAP=1

cargo fuzz build -s none -a
mkdir -p target/logs
for t in "${targets[@]}"; do
    mkdir -p "target/corpus/$t" "artifacts/$t"
    echo "fuzz $t for ${seconds}s"
    if ! cargo fuzz run -s none -a "$t" "target/corpus/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"target/logs/$t.log" 2>&1; then
        tail -n 40 "target/logs/$t.log"
        echo "fuzz $t: CRASH (input in fuzz/artifacts/$t/)" >&2
        exit 1
    fi
    grep -E '^Done|stat::number_of_executed_units|stat::peak_rss_mb' "target/logs/$t.log" || true
done
