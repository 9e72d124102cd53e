# The host's verdict on the guest's console (sourced by run.sh; Tests/KernelHarnessTests runs it on fake
# consoles).
# shellcheck shell=bash

# Reads a console log and passes only when all of these hold (NAME is $KT_NAME, kernel-vfio by default,
# PROGRAM $KT_GUEST_PROGRAM, kernel-vfio-check by default):
#  - exactly one summary line `NAME: N passed, M failed`, with M = 0 and N > 0;
#  - exactly N lines `PASS name` and M lines `FAIL name: …` (so no check's line went missing, and none
#    was printed twice or by a child that was not counted);
#  - the guest reported `guest: PROGRAM exit 0` (the check program's own exit status).
# Prints the summary line and `NAME: PASSED`, or `NAME: FAILED: <reasons>` (one line, the
# reasons joined by "; "); returns 0 or 1.
kt_verdict() {
    local log=$1 out rc=0
    [ -r "$log" ] || { echo "$KT_NAME: FAILED: no console log $log"; return 1; }
    out=$(tr -d '\r' <"$log" | awk -v name="$KT_NAME" -v program="$KT_GUEST_PROGRAM" '
        /^PASS [^ ]/ { pass++ }
        /^FAIL [^ :]+:/ { fail++; if (names != "") names = names ", "; names = names substr($2, 1, length($2) - 1) }
        $0 ~ ("^" name ": [0-9]+ passed, [0-9]+ failed$") { summaries++; summary = $0; said_pass = $2 + 0; said_fail = $4 + 0 }
        $0 ~ ("^guest: " program " exit [0-9]+$") { exits++; code = $4 + 0 }
        function reason(r) { reasons = reasons (reasons == "" ? "" : "; ") r }
        END {
            pass += 0; fail += 0
            if (summaries == 0) reason("the guest printed no summary line `" name ": N passed, M failed`")
            else if (summaries > 1) reason(summaries " summary lines, want one")
            else {
                if (pass != said_pass || fail != said_fail)
                    reason("the summary says " said_pass " passed, " said_fail " failed, but the console has " pass " PASS and " fail " FAIL lines")
                if (said_fail > 0) reason(said_fail " check(s) failed: " names)
                if (said_pass + said_fail == 0) reason("no check ran")
            }
            if (exits == 0) reason("the guest did not report " program "'"'"'s exit status")
            else if (exits > 1) reason(exits " exit status lines, want one")
            else if (code != 0) reason(program " exited with status " code (code > 128 ? " (killed by signal " code - 128 ")" : ""))
            if (summaries == 1) print summary
            if (reasons == "") { print name ": PASSED"; exit 0 }
            print name ": FAILED: " reasons
            exit 1
        }') || rc=$?
    echo "$out"
    return "$rc"
}
