#!/bin/bash
# Entry script of the hostbrick VM suite (run by the guest init from the 9p share).
# Runs every scenarios/*.sh whose name matches $HOSTBRICK_VM_SCENARIOS (from suite.env), one
# after the other, resetting initiator and targets in between, and writes
#   results/results.tsv   name <TAB> pass|fail <TAB> connect_s <TAB> disconnect_s <TAB> floor_s <TAB> message
#   results/<name>.log    the scenario's output
#   results/bench.tsv     section <TAB> label <TAB> runs <TAB> connect_s <TAB> disconnect_s <TAB> floor_s <TAB> note
#                         (benchmark lines the scenarios add with bench_line)
set -u
GUEST_DIR=$(cd "$(dirname "$0")" && pwd)
SHARE=$(cd "$GUEST_DIR/.." && pwd)
export GUEST_DIR SHARE RESULTS=$SHARE/results ATTACH=$SHARE/bin/attach
[ -f "$SHARE/suite.env" ] && . "$SHARE/suite.env"
# Run the binaries from a local copy: started from the 9p share (cache=none), every run pages
# the program in over 9p, which costs seconds under emulation and would count in each timing.
if mkdir -p /tmp/hostbrick-bin && cp "$SHARE"/bin/* /tmp/hostbrick-bin/ 2>/dev/null; then
    ATTACH=/tmp/hostbrick-bin/attach CONCURRENT=/tmp/hostbrick-bin/concurrent_attach
    export ATTACH CONCURRENT
fi
. "$GUEST_DIR/lib.sh"

FILTER=${HOSTBRICK_VM_SCENARIOS:-}
SCENARIO_TIMEOUT=${HOSTBRICK_VM_SCENARIO_TIMEOUT:-300}
TSV=$RESULTS/results.tsv
mkdir -p "$RESULTS"; : > "$TSV"; : > "$RESULTS/bench.tsv"

log "modules"
targets_modules || log "some target modules failed to load"
log "attach binary: $(ls -l "$ATTACH" 2>&1)"

failed=0
for script in "$GUEST_DIR"/scenarios/*.sh; do
    name=$(basename "$script" .sh); name=${name#[0-9][0-9]-}
    if [ -n "$FILTER" ] && ! [[ $name =~ $FILTER ]]; then continue; fi
    guest_reset
    echo "======== scenario $name"
    rm -f "$RESULTS/$name.res"
    # a scenario may ask for more time with a line '# vm-timeout: SECS' (the larger wins)
    limit=$(sed -n 's/^# vm-timeout: *\([0-9][0-9]*\).*/\1/p' "$script" | head -n1)
    [ -n "$limit" ] && [ "$limit" -gt "$SCENARIO_TIMEOUT" ] || limit=$SCENARIO_TIMEOUT
    start=$(now_ns)
    SCENARIO_NAME=$name timeout --kill-after=10 "$limit" bash "$script" "$name" 2>&1 \
        | tee "$RESULTS/$name.log"
    rc=${PIPESTATUS[0]}
    took=$(secs_since "$start")
    status=fail connect=- disconnect=- floor=- message=""
    if [ -s "$RESULTS/$name.res" ]; then
        status=$(sed -n 's/^status=//p' "$RESULTS/$name.res")
        connect=$(sed -n 's/^connect_s=//p' "$RESULTS/$name.res")
        disconnect=$(sed -n 's/^disconnect_s=//p' "$RESULTS/$name.res")
        floor=$(sed -n 's/^floor_s=//p' "$RESULTS/$name.res")
        message=$(sed -n 's/^message=//p' "$RESULTS/$name.res")
    fi
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        status=fail message="timed out after ${limit}s${message:+; last verdict: $message}"
    elif [ "$status" = pass ] && [ "$rc" != 0 ]; then
        status=fail message="exit code $rc despite a pass verdict"
    elif [ -z "$message" ]; then
        status=fail message="no verdict (exit code $rc)"
    fi
    [ "$status" = pass ] || failed=$((failed + 1))
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$connect" "$disconnect" "$floor" "$message" >> "$TSV"
    echo "======== scenario $name: $status in ${took}s"
    # State after the scenario, for the post-mortem.
    {
        echo "--- iscsiadm -m session"; iscsiadm -m session 2>&1
        echo "--- iscsiadm -m node"; iscsiadm -m node 2>&1
        echo "--- multipath -ll"; multipath -ll 2>&1
        echo "--- lsscsi"; lsscsi 2>&1
        echo "--- nvme list-subsys"; nvme list-subsys 2>&1
        echo "--- /sys/class/nvme, /sys/block"; ls /sys/class/nvme /sys/block 2>&1 | tr '\n' ' '; echo
    } >> "$RESULTS/$name.log"
done
guest_reset
echo "suite: $failed scenario(s) failed"
[ "$failed" = 0 ]
