#!/bin/bash
# Not a test: recaptures tests/fixtures/nvme/ (nvme-cli output and sysfs of a real NVMe/TCP
# attach on the guest kernel). Runs only when asked for by name:
#   HOSTBRICK_VM_SCENARIOS=fixture-capture tests/vm/run-suite.sh
#   cp target/vm/share/results/nvme-fixtures/*.txt tests/fixtures/nvme/
. "$GUEST_DIR/lib.sh"
scenario_begin "$1"
[[ ${HOSTBRICK_VM_SCENARIOS:-} == *capture* ]] \
    || scenario_pass "skipped (fixture capture: HOSTBRICK_VM_SCENARIOS=fixture-capture)"
bash "$GUEST_DIR/capture-nvme-fixtures.sh" "$RESULTS/nvme-fixtures"
ls "$RESULTS/nvme-fixtures"/*.txt >/dev/null 2>&1 || fail "no fixtures written"
scenario_pass "fixtures in results/nvme-fixtures/"
