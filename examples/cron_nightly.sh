#!/bin/sh
# Run a flow from cron: recover its latest run if that one did not succeed, else start a new run;
# never two at once.  The console shows only warnings, errors and each run's summary when it is not
# a terminal, so cron mails only what matters; the exit status is the run's.
#
#   crontab -e:
#   MAILTO=ops@example.com
#   30 2 * * *  /srv/flows/examples/cron_nightly.sh /srv/flows/nightly.py /srv/flows/nightly.run.db
#
# Exit status: 0 the run (or the recovery) succeeded, or the previous run is still running;
# 1 it failed (the next call recovers it); 2 a usage or definition error.
# SEQUENT names the command (default: sequent on the PATH, e.g. /srv/flows/.venv/bin/sequent).
set -u
FLOW=${1:?usage: cron_nightly.sh FLOW.py STORE}
STORE=${2:?usage: cron_nightly.sh FLOW.py STORE}
SEQUENT=${SEQUENT:-sequent}

# One at a time: a lock file beside the store, held while this script runs (flock, util-linux).
exec 9>>"$STORE.cron.lock"
if ! flock -n 9; then
    echo "cron_nightly: $FLOW is still running from an earlier call; not starting another" >&2
    exit 0
fi

# Recover the latest run; status 3 means there is nothing to recover (no run yet, or it succeeded).
errors=$(mktemp)
"$SEQUENT" recover "$FLOW" --latest --store "$STORE" 2>"$errors"
status=$?
if [ "$status" -ne 3 ]; then
    cat "$errors" >&2
    rm -f "$errors"
    exit "$status"
fi
rm -f "$errors"
exec "$SEQUENT" run "$FLOW" --store "$STORE"
