#!/bin/sh
# Builds a kernel with what kchaos guests need, and nothing else, and prints the `path:`
# spec to run it with:
#
#   vm-images/recipes/kernel/build.sh SRC [OUT] [FRAGMENT...]
#   cargo kchaos run --kernel "$(vm-images/recipes/kernel/build.sh ~/linux)"
#
# SRC is a kernel source tree (a git checkout, or Debian's linux-source-6.1 unpacked).
# OUT defaults to SRC/kchaos-build. The configuration starts from `tinyconfig` plus
# `kvm_guest.config` (virtme-ng's idea: a VM needs few drivers) and adds kchaos.config;
# FRAGMENTs (file names next to this script, e.g. defects.config or debug.config, or
# paths) are merged after it. That is a few minutes on two cores where x86_64_defconfig
# took a quarter of an hour.
#
# This script is the one implementation of the build: `--kernel build:defects` runs it
# too (kchaos embeds it with the fragments and patches, see docs/kernels.md).
#
# Every option a fragment sets that the kernel's Kconfig did not take (unknown on this
# version, unmet dependencies, overridden) is reported as a line starting with
# `build.sh: not set as asked:`, so a missing feature is never a surprise.
#
# Progress goes to stderr; stdout is only the spec, so `git bisect run` scripts can
# capture it. KCHAOS_BUILD_JOBS overrides `make -j` (default: nproc).
# KCHAOS_CCACHE=1 compiles through ccache (see "Compiler cache" below).
# When SRC is a clean git tree the spec ends with `,commit=<hash>` (see "Provenance").
# Needs: gcc, make, flex, bison, bc, libelf-dev, libssl-dev (and ccache, git for those).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "${1:?usage: build.sh SRC [OUT] [FRAGMENT...]}" && pwd)
out=${2:-$src/kchaos-build}
[ $# -ge 2 ] && shift 2 || shift $#
mkdir -p "$out"
out=$(cd "$out" && pwd)
jobs=${KCHAOS_BUILD_JOBS:-$(nproc)}
fragments="$here/kchaos.config"
for f in "$@"; do
    case $f in /*) fragments="$fragments $f" ;; *) fragments="$fragments $here/$f" ;; esac
done
# ARCH=x86_64, not the default x86: tinyconfig would otherwise pick a 32-bit kernel.
mk() { make -C "$src" O="$out" ARCH=x86_64 "$@"; }

# Compiler cache (kchaos sets it for `build:` recipes and `bisect --source` when ccache
# is installed): with KCHAOS_CCACHE=1 every compile goes through ccache, configured by
# the caller's CCACHE_* variables (its directory, size bound, base directory). Off by
# default: a plain run builds exactly as before. Keep the same CC string from build to
# build in one OUT, or Kbuild rebuilds everything whose command line changed.
if [ -n "${KCHAOS_CCACHE:-}" ]; then
    command -v ccache >/dev/null ||
        { echo "build.sh: KCHAOS_CCACHE is set but ccache is not installed" >&2; exit 1; }
    mk() { make -C "$src" O="$out" ARCH=x86_64 CC="ccache gcc" "$@"; }
fi

# Whether the source tree's Kconfig defines SYMBOL at all.
known() {
    find "$src" -name 'Kconfig*' -not -path "$out/*" -exec \
        grep -Eqs "^[[:space:]]*(menu)?config[[:space:]]+$1[[:space:]]*\$" {} + 2>/dev/null
}

# One line per fragment option the final .config does not honour.
check_config() {
    for f in $fragments; do
        grep -E '^CONFIG_[A-Za-z0-9_]+=|^# CONFIG_[A-Za-z0-9_]+ is not set' "$f" |
            while IFS= read -r line; do
                case $line in
                '# '*)
                    sym=${line#\# CONFIG_}
                    sym=${sym%% *}
                    grep -q "^CONFIG_$sym=" "$out/.config" || continue
                    ;;
                *)
                    sym=${line#CONFIG_}
                    sym=${sym%%=*}
                    grep -qxF "$line" "$out/.config" && continue
                    ;;
                esac
                if known "$sym"; then
                    why="refused by Kconfig: unmet dependency, or selected by another option"
                else
                    why="unknown to this kernel version"
                fi
                echo "build.sh: not set as asked: $line ($why; from $(basename "$f"))"
            done
    done
}

{
    mk tinyconfig
    mk kvm_guest.config
    # shellcheck disable=SC2086
    "$src/scripts/kconfig/merge_config.sh" -m -O "$out" "$out/.config" $fragments
    mk olddefconfig
    check_config
    mk -j"$jobs" bzImage modules
    mk INSTALL_MOD_PATH="$out/mods" modules_install
    # The build/source links modules_install leaves point back into the tree.
    rm -f "$out/mods/lib/modules"/*/build "$out/mods/lib/modules"/*/source
} 1>&2
release=$(mk -s kernelrelease)

# Provenance: when SRC is the top of a git work tree, OUT/kchaos-source records its
# commit, `git describe` and whether it had uncommitted changes, and a clean tree's spec
# names the commit (`,commit=<hash>`), so results say which commit a kernel was built
# from and `kchaos bisect` can start from two recorded runs.
commit=
rm -f "$out/kchaos-source"
if top=$(git -C "$src" rev-parse --show-toplevel 2>/dev/null) &&
    [ "$top" = "$(cd "$src" && pwd -P)" ] &&
    head=$(git -C "$src" rev-parse -q --verify HEAD); then
    dirty=0
    git -C "$src" diff --quiet HEAD -- 2>/dev/null || dirty=1
    printf 'commit=%s\ndescribe=%s\ndirty=%s\n' "$head" \
        "$(git -C "$src" describe --always --dirty --abbrev=12)" "$dirty" >"$out/kchaos-source"
    [ "$dirty" = 1 ] || commit=",commit=$head"
fi
echo "path:$out/arch/x86/boot/bzImage,modules=$out/mods/lib/modules/$release,config=$out/.config$commit"
