#!/bin/bash
# Not a test: recaptures tests/fixtures/rbd/ (rbd CLI, rbd-nbd and krbd/nbd sysfs on the guest
# kernel against a one-node Ceph). Runs only when asked for by name:
#   HOSTBRICK_VM_DIR=target/vm-ceph HOSTBRICK_VM_SCENARIOS=rbd-fixture-capture \
#     HOSTBRICK_VM_SCENARIO_TIMEOUT=1500 HOSTBRICK_VM_TIMEOUT=1800 tests/vm/run-suite.sh
#   cp target/vm-ceph/share/results/rbd-fixtures/*.txt tests/fixtures/rbd/
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"
[[ ${HOSTBRICK_VM_SCENARIOS:-} == *rbd-fixture* ]] \
    || scenario_pass "skipped (RBD fixture capture: HOSTBRICK_VM_SCENARIOS=rbd-fixture-capture)"
bash "$GUEST_DIR/capture-rbd-fixtures.sh" "$RESULTS/rbd-fixtures"; rc=$?
ceph_teardown
[ "$rc" = 0 ] || fail "capture script failed (rc=$rc)"
ls "$RESULTS/rbd-fixtures"/*.txt >/dev/null 2>&1 || fail "no fixtures written"
scenario_pass "fixtures in results/rbd-fixtures/"
