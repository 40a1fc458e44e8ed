#!/bin/sh
# Builds a kernel from a source tree with what kchaos scenarios need, and prints the
# `path:` spec to run it with:
#
#   vm-images/recipes/kernel/build.sh SRC [OUT] [FRAGMENT...]
#   cargo kchaos run --kernel "$(vm-images/recipes/kernel/build.sh ~/linux)"
#
# SRC is a kernel source tree (a git checkout, or `apt-get install linux-source-6.1`
# and unpack /usr/src/linux-source-6.1.tar.xz). OUT defaults to SRC/kchaos-build.
# FRAGMENTs (e.g. debug.config next to this script) are merged after kchaos.config.
# Progress goes to stderr; stdout is only the spec, so `git bisect run` scripts can
# capture it. Needs: gcc, make, flex, bison, bc, libelf-dev, libssl-dev.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "${1:?usage: build.sh SRC [OUT] [FRAGMENT...]}" && pwd)
out=${2:-$src/kchaos-build}
[ $# -ge 2 ] && shift 2 || shift $#
mkdir -p "$out"
fragments="$here/kchaos.config"
for f in "$@"; do
    case $f in /*) fragments="$fragments $f" ;; *) fragments="$fragments $here/$f" ;; esac
done
{
    make -C "$src" O="$out" x86_64_defconfig kvm_guest.config
    # shellcheck disable=SC2086
    "$src/scripts/kconfig/merge_config.sh" -m -O "$out" "$out/.config" $fragments
    make -C "$src" O="$out" olddefconfig
    # What the fragments asked for and the kernel's Kconfig refused (unknown on this
    # version, or unmet dependencies), so a missing feature is never a surprise.
    for f in $fragments; do
        grep -E '^CONFIG_[A-Z0-9_]+=' "$f" | while IFS= read -r line; do
            grep -qx "$line" "$out/.config" || echo "build.sh: not set as asked: $line" >&2
        done
    done
    make -C "$src" O="$out" -j"$(nproc)" bzImage modules
    make -C "$src" O="$out" INSTALL_MOD_PATH="$out/mods" modules_install
} 1>&2
release=$(make -s -C "$src" O="$out" kernelrelease)
echo "path:$out/arch/x86/boot/bzImage,modules=$out/mods/lib/modules/$release,config=$out/.config"
