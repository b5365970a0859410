#!/usr/bin/env bash
# Checks the systemd units in systemd/:
#  1. `systemd-analyze verify` in a throwaway root (the host's own unit library copied in, the
#     ExecStart= binaries present as stubs), failing on ANY output: verify exits 0 on an unknown
#     key or an unparsable value and only prints a warning.
#  2. each unit keeps the deployment policy of issue 7 (notify + watchdog, restart limits,
#     dedicated user, sandboxing): a drop of one of these lines is a failure here.
#  3. prints `systemd-analyze security` exposure scores (information, not a gate).
#
# Usage: tests/deploy/check-units.sh            (needs systemd-analyze: Debian package `systemd`)
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
units=("$here"/systemd/*.service)
command -v systemd-analyze >/dev/null || { echo "check-units: systemd-analyze not found (apt-get install systemd)"; exit 1; }

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/lib/systemd" "$root/etc/systemd/system" "$root/usr/bin"
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
failed=0
names=()
for u in "${units[@]}"; do
    name="$(basename "$u")"
    names+=("/etc/systemd/system/$name")
    cp "$u" "$root/etc/systemd/system/$name"
    # every Exec*= program (ExecStart's binary, ExecReload's /bin/kill, ...) as a stub in the root
    while read -r exe; do
        mkdir -p "$root$(dirname "$exe")"
        printf '#!/bin/sh\nexit 0\n' > "$root$exe"
        chmod 755 "$root$exe"
    done < <(sed -n 's/^Exec[A-Za-z]*=[-@:+!]*\([^ ]*\).*/\1/p' "$u")

    for want in '^Type=notify$' '^NotifyAccess=main$' '^WatchdogSec=[1-9]' '^Restart=on-failure$' \
        '^StartLimitIntervalSec=[1-9]' '^StartLimitBurst=[1-9]' '^User=skypost-' '^ProtectSystem=strict$' \
        '^ProtectHome=yes$' '^PrivateTmp=yes$' '^NoNewPrivileges=yes$' '^ConfigurationDirectory=skypost$' \
        '^CapabilityBoundingSet=$' '^RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6' \
        '^ConditionPathExists=/etc/skypost/' '^WantedBy=multi-user.target$'; do
        if ! grep -Eq "$want" "$u"; then
            echo "check-units: $name lacks a line matching /$want/"
            failed=1
        fi
    done
done

out="$(systemd-analyze verify --root="$root" "${names[@]}" 2>&1)" || { echo "$out"; echo "check-units: verify failed"; exit 1; }
if [ -n "$out" ]; then
    echo "$out"
    echo "check-units: systemd-analyze verify printed warnings (treated as errors)"
    failed=1
fi

for n in "${names[@]}"; do
    systemd-analyze security --offline=yes --root="$root" "$(basename "$n")" 2>/dev/null | tail -n 1 || true
done

if [ "$failed" -ne 0 ]; then
    exit 1
fi
echo "check-units: ${#units[@]} units verified"
