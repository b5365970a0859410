#!/usr/bin/env bash
# Builds the Debian packages of drone-agent, locker-agent and relay with cargo-deb and checks
# them the way dpkg would see them:
#   - control: name, architecture, Depends (libc6 from $auto, adduser for the postinst);
#   - files: the binary in /usr/bin, the unit in the systemd unit directory, the example config
#     in /etc/skypost (a conffile), README.Debian;
#   - maintainer scripts: postinst creates the user and enables the unit, and starts nothing;
#   - the packaged binary runs (`--version`, `config check` of the packaged example config) and
#     the packaged unit passes `systemd-analyze verify` against it, in a throwaway root;
#   - with SKYPOST_DEB_CHROOT=DIR (a Debian root, e.g. from `debootstrap --variant=minbase
#     --include=adduser bookworm DIR`): `dpkg -i` inside it for real, then the user, its groups,
#     the state directory and the enablement symlink are checked, and that nothing was started.
#
# Usage: tests/deploy/deb.sh [--no-build] [--target TRIPLE]
#   needs: cargo-deb (`cargo install cargo-deb --locked`), dpkg-deb, systemd-analyze.
#   --no-build packages what `cargo build --release -p drone-agent -p locker-agent -p relay`
#   already left in the target dir.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$here"
build=()
target=()
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) build=(--no-build) ;;
        --target) target=(--target "$2"); shift ;;
        *) echo "deb.sh: unknown argument $1"; exit 2 ;;
    esac
    shift
done
command -v cargo-deb >/dev/null || { echo "deb.sh: cargo-deb missing (cargo install cargo-deb --locked)"; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
check() { # check DESCRIPTION COMMAND...
    local what="$1"; shift
    if "$@" >/dev/null 2>&1; then ok; else bad "$what"; fi
}

# crate  package  user  groups(space-separated)
packages=(
    "drone-agent skypost-drone-agent skypost-drone dialout,video,gpio"
    "locker-agent skypost-locker-agent skypost-locker dialout,video,tty,gpio"
    "relay skypost-relay skypost-relay -"
)

for row in "${packages[@]}"; do
    read -r crate pkg user groups <<<"$row"
    echo "== $pkg"
    deb="$(cargo deb -p "$crate" "${build[@]}" "${target[@]}" --output "$work/" 2>"$work/$crate.cargo-deb.log" | tail -n 1)"
    if [ ! -f "$deb" ]; then
        cat "$work/$crate.cargo-deb.log"
        bad "$pkg: cargo deb produced no package"
        continue
    fi
    ls -l "$deb" | awk '{print "   ", $5, "bytes", $9}'
    arch="$(dpkg-deb -f "$deb" Architecture)"
    check "$pkg: Package field" test "$(dpkg-deb -f "$deb" Package)" = "$pkg"
    check "$pkg: Depends has adduser and libc6" sh -c "dpkg-deb -f '$deb' Depends | grep -q adduser && dpkg-deb -f '$deb' Depends | grep -q libc6"

    root="$work/$pkg-root"
    ctl="$work/$pkg-control"
    dpkg-deb -x "$deb" "$root"
    dpkg-deb -e "$deb" "$ctl"
    unit="$(find "$root/lib/systemd/system" "$root/usr/lib/systemd/system" -name "$pkg.service" 2>/dev/null | head -n 1 || true)"
    check "$pkg: unit in the systemd unit directory" test -n "$unit"
    check "$pkg: the unit is the one in systemd/" cmp -s "$unit" "systemd/$pkg.service"
    check "$pkg: /usr/bin/$crate executable" test -x "$root/usr/bin/$crate"
    check "$pkg: example config in /etc/skypost" test -f "$root/etc/skypost/$crate.toml.example"
    check "$pkg: no real config shipped (the unit must wait for the technician's)" test ! -e "$root/etc/skypost/$crate.toml"
    check "$pkg: example config is a conffile" grep -qx "/etc/skypost/$crate.toml.example" "$ctl/conffiles"
    check "$pkg: README.Debian" test -f "$root/usr/share/doc/$pkg/README.Debian"
    check "$pkg: postinst creates the user" grep -q "adduser --system" "$ctl/postinst"
    check "$pkg: postinst enables the unit" grep -q "deb-systemd-helper enable" "$ctl/postinst"
    # (its echo lines tell the technician to start it; no command line may do so)
    check "$pkg: postinst starts nothing" sh -c "! grep -v '^[[:space:]]*echo' '$ctl/postinst' | grep -Eq 'deb-systemd-invoke (start|restart) |systemctl (--no-block )?start'"
    check "$pkg: maintainer scripts parse" sh -n "$ctl/postinst"

    # The packaged binary and example config, run for real (only when built for this machine).
    if [ "$arch" = "$(dpkg --print-architecture)" ]; then
        check "$pkg: --version" "$root/usr/bin/$crate" --version
        if out="$("$root/usr/bin/$crate" config check "$root/etc/skypost/$crate.toml.example" 2>&1)"; then ok; else bad "$pkg: example config fails its own check: $out"; fi
        vroot="$work/$pkg-vroot"
        mkdir -p "$vroot/usr/lib/systemd" "$vroot/etc/systemd/system"
        cp -a /usr/lib/systemd/system "$vroot/usr/lib/systemd/"
        cp -a "$root/." "$vroot/"
        out="$(systemd-analyze verify --root="$vroot" "${unit#"$root"}" 2>&1)" && [ -z "$out" ] && ok || bad "$pkg: systemd-analyze verify on the packaged tree: $out"
    fi

    # A real install in a Debian root.
    chroot_dir="${SKYPOST_DEB_CHROOT:-}"
    if [ -n "$chroot_dir" ] && [ "$arch" = "$(dpkg --print-architecture)" ]; then
        cp "$deb" "$chroot_dir/tmp/"
        name="$(basename "$deb")"
        # policy-rc.d 101: nothing may start a service inside the chroot (the postinst should not try)
        printf '#!/bin/sh\nexit 101\n' > "$chroot_dir/usr/sbin/policy-rc.d"; chmod 755 "$chroot_dir/usr/sbin/policy-rc.d"
        if chroot "$chroot_dir" dpkg -i "/tmp/$name" >"$work/$pkg.dpkg.log" 2>&1; then ok; else cat "$work/$pkg.dpkg.log"; bad "$pkg: dpkg -i in the chroot"; fi
        check "$pkg: user $user exists" chroot "$chroot_dir" getent passwd "$user"
        if [ "$groups" != "-" ]; then
            for g in ${groups//,/ }; do
                check "$pkg: $user in group $g" sh -c "chroot '$chroot_dir' id -nG '$user' | tr ' ' '\n' | grep -qx '$g'"
            done
        fi
        state="$(sed -n 's/^STATE_DIR=//p' "$ctl/postinst")"
        check "$pkg: state dir $state owned by $user, mode 750" test "$(chroot "$chroot_dir" stat -c '%U %a' "$state")" = "$user 750"
        check "$pkg: unit enabled (multi-user.target.wants link)" test -L "$chroot_dir/etc/systemd/system/multi-user.target.wants/$pkg.service"
        check "$pkg: postinst told the technician what to do next" grep -q "config check" "$work/$pkg.dpkg.log"
        check "$pkg: nothing tried to start it" sh -c "! grep -qi 'invoke-rc.d\\|policy-rc.d denied' '$work/$pkg.dpkg.log'"
        check "$pkg: purge removes the state dir" sh -c "chroot '$chroot_dir' dpkg --purge '$pkg' && ! test -e '$chroot_dir$state'"
        rm -f "$chroot_dir/tmp/$name"
    fi
done

echo "deb: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
