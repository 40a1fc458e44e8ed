#!/bin/sh
# Builds systemd's PID 1 with the defect patches, inside a copy of the systemd image's
# own root filesystem (so it links against exactly the image's libraries), from the
# Debian source package of the very version the image carries. kchaos runs it as
#
#   chroot BUILDROOT /bin/sh /kchaos/build.sh VERSION
#
# in a private mount namespace with /proc mounted; the host's packages are never
# touched. It writes /kchaos/out/: the three files PID 1 is made of and `manifest`, one
# "FILE<TAB>PATH-IN-THE-IMAGE" line each. Every byte of this directory is part of the
# cache key of the image it makes (vm-images/src/systemd/defects.rs).
#
# Only PID 1 is rebuilt: `systemd` and the two private libraries it links, under a tag
# of their own (libsystemd-shared-<version>-kchaos.so) so that every other program of
# the image keeps Debian's libraries. Optional features are off but seccomp (unit
# sandboxing PID 1 applies); the stock twin is this same build without the defect's
# boot parameter, so both differ from Debian's binary in the same way.
set -eu

version="$1"
out=/kchaos/out
src=/kchaos/src
build=/kchaos/build-dir
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8

step() { echo "kchaos-systemd-build: $*"; }

step "build dependencies"
# deb-src lines for the suites the image's packages came from.
sed -n 's/^deb /deb-src /p' /etc/apt/sources.list > /etc/apt/sources.list.d/kchaos-src.list
apt-get -q -o Acquire::Retries=3 update
apt-get -q -o Acquire::Retries=3 install -y --no-install-recommends \
    gcc libc6-dev meson ninja-build gperf pkg-config python3-jinja2 \
    libcap-dev libmount-dev libseccomp-dev dpkg-dev patch patchelf

step "source systemd $version"
rm -rf "$src" "$build" "$out"
mkdir -p "$src" "$out"
cd "$src"
if ! apt-get -q -o Acquire::Retries=3 source "systemd=$version"; then
    echo "kchaos-systemd-build: the archive no longer serves systemd $version, the version in the image; rebuild the image (kchaos cache prune --all) to take the current one" >&2
    exit 3
fi
cd "$src"/systemd-*/

step "patches"
for p in /kchaos/patches/*.patch; do
    echo "applying $(basename "$p")"
    patch -p1 --forward --batch < "$p"
done

step "configure"
# Debian's paths (debian/rules): split /usr, libraries under the multiarch directory.
meson setup "$build" \
    -Dauto_features=disabled -Dmode=release -Dbuildtype=plain -Dc_args='-O2 -g0' \
    -Drootlibdir=/usr/lib/x86_64-linux-gnu -Dsplit-usr=true \
    -Dshared-lib-tag="$(echo "$version" | sed 's/-.*//')-kchaos" \
    -Dversion-tag="$version+kchaos" \
    -Dseccomp=true -Ddefault-hierarchy=unified \
    -Dman=false -Dtranslations=false -Dtests=false -Dstandalone-binaries=false \
    -Dsysvinit-path=/etc/init.d -Dsysvrcnd-path=/etc \
    -Ddefault-kill-user-processes=false -Ddefault-dnssec=no \
    -Dsystem-uid-max=999 -Dsystem-gid-max=999 -Dnobody-user=nobody -Dnobody-group=nogroup \
    -Dstatus-unit-format-default=combined -Ddbuspolicydir=/usr/share/dbus-1/system.d/

step "compile PID 1"
ninja -C "$build" systemd

step "collect"
# Where meson would install each file; the build tree's RUNPATH points into the build
# tree, so each gets the directory the libraries go to, as an installed build has.
meson introspect "$build" --installed > "$out/installed.json"
python3 - "$build" "$out" <<'PY'
import json, os, shutil, sys
build, out = sys.argv[1], sys.argv[2]
installed = json.load(open(os.path.join(out, "installed.json")))
wanted = {}
for built, dest in installed.items():
    name = os.path.basename(built)
    if built == os.path.join(build, "systemd") or (
        name.startswith(("libsystemd-shared-", "libsystemd-core-")) and name.endswith("-kchaos.so")
    ):
        wanted[built] = dest
if len(wanted) != 3:
    sys.exit(f"expected PID 1 and its two libraries among meson's installed files, found {sorted(wanted)}")
with open(os.path.join(out, "manifest"), "w") as m:
    for built, dest in sorted(wanted.items()):
        shutil.copy2(built, os.path.join(out, os.path.basename(built)))
        m.write(f"{os.path.basename(built)}\t{dest}\n")
PY
libdir=$(awk -F'\t' '$1 ~ /^libsystemd-shared-/ { sub(/\/[^\/]*$/, "", $2); print $2 }' "$out/manifest")
for f in $(cut -f1 "$out/manifest"); do
    patchelf --set-rpath "$libdir" "$out/$f"
done
step "done: $(tr '\n' ' ' < "$out/manifest")"
