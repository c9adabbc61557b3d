#!/usr/bin/env bash
# Builds and checks the whole package on arm64 Linux under emulation, on an x86-64 host:
#   1. tools      debootstrap, qemu-user-static, binfmt-support (installed when missing, as root)
#   2. root       a Debian trixie arm64 root under .build/aarch64-root (debootstrap --arch=arm64,
#                 then swiftlang 6.0.3, libopenblas-dev, libnuma-dev, pkg-config, git inside it);
#                 made once, reused by later runs
#   3. mounts     the repository at /tessera, ../shared at /shared, and the machine's Swift package
#                 mirror (/opt/swift-packages, read-only, with the host's git URL rewriting), so
#                 SwiftPM resolves swift-argument-parser without a network fetch from a forge
#   4. build      swift build -c release inside the root (scratch .build/aarch64-root/var/tmp/...)
#   5. tests      the kernel and tokenizer tests (release, -enable-testing, CI=true: a missing SIMD
#                 path fails), which check the NEON + dotprod paths against their references
#   6. chat       the demo model answering greedy prompts through `chat --prompt`, compared
#                 with the text the x86-64 build gives (taken from this host's .build/release/chat
#                 when it is built, else the recorded text below)
# One line per step with its time; exits non-zero at the first failure. Runs as root (chroot,
# mounts). Not part of CI: the first run takes about 70 minutes on 2 cores (most of it the
# emulated compiler), a second run reuses the root and the build.
# Environment: AARCH64_ROOT (default .build/aarch64-root), DEBIAN_MIRROR, TESSERA_SHARED.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
root=${AARCH64_ROOT:-$repo/.build/aarch64-root}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
shared=${TESSERA_SHARED:-$(dirname "$repo")/shared}
scratch=/var/tmp/tessera-build
inside_packages=(swiftlang libopenblas-dev libnuma-dev pkg-config git ca-certificates)
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
log=$repo/.build/check-aarch64.log
mkdir -p "$repo/.build"
: >"$log"

t0=$(date +%s)
step_start=$t0
step() { # name: closes the previous step's timing
    local now; now=$(date +%s)
    printf 'check-aarch64: %-8s ok  %5ds  %s\n' "$current" $((now - step_start)) "$detail"
    step_start=$now
}
fail() { echo "check-aarch64: $current FAILED: $*  (log: $log)" >&2; exit 1; }
run_logged() { "$@" >>"$log" 2>&1; }

current=start
trap 'echo "check-aarch64: $current FAILED at line $LINENO (log: $log)" >&2' ERR
[ "$(id -u)" = 0 ] || { echo "check-aarch64: run as root (debootstrap, chroot and mounts need it)" >&2; exit 1; }

# ---- 1. tools -------------------------------------------------------------------------------
current=tools; detail=""
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || fail "cannot mount binfmt_misc"
missing=()
for p in debootstrap qemu-user-static binfmt-support; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
    run_logged apt-get update -qq || fail "apt-get update"
    run_logged env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" || fail "apt-get install ${missing[*]}"
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    run_logged update-binfmts --enable qemu-aarch64 || true
fi
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || fail "qemu-aarch64 is not registered with binfmt_misc"
grep -q '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 ||
    fail "the qemu-aarch64 binfmt entry lacks the F flag (it must work inside a chroot)"
detail="qemu: $(qemu-aarch64-static --version | head -1)"
step

# ---- 2. root --------------------------------------------------------------------------------
current=root
marker=$root/.tessera-root
if [ -f "$marker" ] && [ "$(cat "$marker")" = "${inside_packages[*]}" ]; then
    detail="reused $root"
else
    if [ ! -x "$root/usr/bin/apt-get" ]; then
        rm -rf "$root"
        run_logged debootstrap --arch=arm64 --variant=minbase trixie "$root" "$mirror" || fail "debootstrap (see the log)"
    fi
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    run_logged chroot "$root" /bin/sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ${inside_packages[*]}" ||
        fail "apt-get install inside the root (see the log)"
    echo "${inside_packages[*]}" >"$marker"
    detail="made $root"
fi
step

# ---- 3. mounts ------------------------------------------------------------------------------
current=mounts
mounted=()
unmount_all() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" 2>/dev/null || true; done
}
trap unmount_all EXIT
bind() { # source target [ro]
    mkdir -p "$2"
    mountpoint -q "$2" && return 0
    mount --bind "$1" "$2" || fail "mount --bind $1 $2"
    mounted+=("$2")
    [ "${3:-}" = ro ] && mount -o remount,bind,ro "$2" 2>/dev/null || true
}
bind /proc "$root/proc"
bind /dev "$root/dev"
bind "$repo" "$root/tessera"
[ -d "$shared" ] && bind "$shared" "$root/shared"
if [ -d /opt/swift-packages ]; then
    bind /opt/swift-packages "$root/opt/swift-packages" ro
    # The host's URL rewriting (github.com → the mirror), without its credential helpers.
    { git config --system --get-regexp '^url\..*\.insteadof$' || true; } >"$root/tmp/tessera-url-rewrites"
    chroot "$root" /bin/sh -c 'rm -f /etc/gitconfig; while read -r k v; do git config --system --add "$k" "$v"; done < /tmp/tessera-url-rewrites' ||
        fail "git config inside the root"
    detail="repo, shared, /opt/swift-packages (ro) + $(wc -l <"$root/tmp/tessera-url-rewrites") URL rewrites"
else
    detail="repo, shared (no /opt/swift-packages: SwiftPM fetches from the network)"
fi
step

inside() { chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 TESSERA_SHARED=/shared CI=true \
    /bin/sh -c "cd /tessera && $1"; }
version=$(inside "swift --version 2>&1 | head -1") || fail "swift does not run inside the root"

# ---- 4. build -------------------------------------------------------------------------------
current=build
run_logged inside "swift build -c release --scratch-path $scratch" || fail "swift build -c release (see the log)"
arch=$( (file -b "$root$scratch/release/chat" 2>/dev/null || true) | cut -d, -f2 | sed 's/^ //')
detail="$version, swift build -c release: chat, tessera, bench (${arch:-arm64})"
step

# ---- 5. tests -------------------------------------------------------------------------------
current=tests
[ -f "$model" ] || run_logged scripts/setup.sh || fail "fetching the demo model (scripts/setup.sh)"
filter='KernelTests|QuantKernelTests|FusedLinearTests|TokenizerTests'
run_logged inside "swift build -c release -Xswiftc -enable-testing --build-tests --scratch-path $scratch-test" || fail "building the tests (see the log)"
out=$(inside "swift test -c release -Xswiftc -enable-testing --skip-build --scratch-path $scratch-test --filter '$filter'" 2>&1) ||
    { echo "$out" >>"$log"; fail "tests (see the log)"; }
echo "$out" >>"$log"
summary=$(echo "$out" | grep -E 'Executed [0-9]+ tests' | tail -1 | sed 's/^ *//' || true)
echo "$out" | grep -q "with 0 failures" || fail "tests: $summary"
detail="$filter: $summary"
step

# ---- 6. chat --------------------------------------------------------------------------------
current=chat
[ -f "$model" ] || run_logged scripts/setup.sh || fail "fetching the demo model (scripts/setup.sh)"
# The prompts, and what the x86-64 build answers (greedy; DemoModelTests asserts the first as ids).
prompts=("What is the capital of France?" "The capital of France is")
flags=("--temp 0 -n 32 -t 2" "--raw --temp 0 -n 32 -t 2")
recorded=("The capital of France is Paris." " Paris.

The answer is: 2018-01-22 12:12:53.")
for i in "${!prompts[@]}"; do
    want=${recorded[i]}
    if [ -x .build/release/chat ]; then
        want=$(.build/release/chat $model ${flags[i]} --prompt "${prompts[i]}" 2>>"$log") || fail "x86-64 chat"
    fi
    got=$(inside "$scratch/release/chat $model ${flags[i]} --prompt '${prompts[i]}'" 2>>"$log") || fail "chat --prompt '${prompts[i]}' (see the log)"
    printf 'prompt %q\n  x86-64:  %q\n  aarch64: %q\n' "${prompts[i]}" "$want" "$got" >>"$log"
    [ "$got" = "$want" ] || fail "chat --prompt '${prompts[i]}': arm64 gave $(printf %q "$got"), x86-64 $(printf %q "$want")"
done
detail="greedy text equals x86-64's for ${#prompts[@]} prompts: $(printf %q "$got" | head -c 60)"
step

echo "check-aarch64: all steps passed in $(( $(date +%s) - t0 ))s"
