#!/usr/bin/env bash
# Cross-checks the AArch64 NEON kernels of KernelsC on an x86-64 host: builds the C kernels with
# the test driver Tests/neon/neon_check.c for aarch64 and runs it under qemu-user. The driver
# compares every NEON entry point with its scalar `_ref` twin (see the header of neon_check.c
# for the exact bounds) and exits non-zero on any mismatch; so does this script.
#
# Runs:
#   1. gcc -march=armv8.2-a+dotprod, qemu -cpu max         dotprod detected: SDOT kernels + dispatch
#   2. the same binary with --no-dotprod                    tsr_cpu_disable(NEON_DOT): dispatch → vmull fallback
#   3. gcc -march=armv8-a (baseline), qemu -cpu cortex-a53  a CPU without dotprod: detection says no,
#                                                           any stray SDOT would be SIGILL
#   4. clang (the Swift toolchain's, if found), -march default, qemu -cpu max
# threadpool.c is not built: it needs libnuma, and the driver does not use the pool.
#
# Installs gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user when missing (as root, or
# through sudo); otherwise prints the apt-get command and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."

# ---- tools ----------------------------------------------------------------------------------
packages=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null ||
    [ ! -e /usr/aarch64-linux-gnu/lib/libc.a ]; then
    missing=()
    for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    if ((${#missing[@]})); then
        if [ "$(id -u)" = 0 ]; then sudo=()
        elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo=(sudo)
        else
            echo "check-neon: missing packages; run: sudo apt-get install -y ${missing[*]}" >&2
            exit 1
        fi
        echo "check-neon: installing ${missing[*]}" >&2
        "${sudo[@]}" apt-get update -qq
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi

# ---- build ----------------------------------------------------------------------------------
out=.build/neon-check
mkdir -p "$out"
src=Sources/KernelsC
sources=()
for f in "$src"/*.c; do
    [ "$(basename "$f")" = threadpool.c ] || sources+=("$f")
done
sources+=(Tests/neon/neon_check.c)
flags=(-O2 -static -Wall -Wextra -I"$src" -I"$src/include")

echo "== build (${#sources[@]} files: ${sources[*]##*/})"
aarch64-linux-gnu-gcc "${flags[@]}" -march=armv8.2-a+dotprod "${sources[@]}" -lm -o "$out/neon_check_dot"
aarch64-linux-gnu-gcc "${flags[@]}" -march=armv8-a "${sources[@]}" -lm -o "$out/neon_check_base"

clang_bin=""
for c in "$(dirname "$(readlink -f "$(command -v swift || echo /nonexistent)")")/clang" "$(command -v clang || true)"; do
    if [ -x "$c" ] && "$c" --target=aarch64-linux-gnu -fuse-ld=lld "${flags[@]}" "${sources[@]}" -lm \
        -o "$out/neon_check_clang" 2>"$out/clang.log"; then
        clang_bin=$c
        break
    fi
done

# ---- run ------------------------------------------------------------------------------------
status=0
summary=()
run() { # name, qemu cpu, binary, driver arguments...
    local name=$1 cpu=$2 bin=$3
    shift 3
    echo
    echo "== $name: qemu-aarch64 -cpu $cpu ${bin##*/} $*"
    local t0 t1 rc=0
    t0=$(date +%s.%N)
    qemu-aarch64 -cpu "$cpu" "$bin" "$@" || rc=$?
    t1=$(date +%s.%N)
    local secs
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    if [ "$rc" = 0 ]; then summary+=("PASS  $name  (${secs} s under qemu)")
    else summary+=("FAIL  $name  (exit $rc, ${secs} s under qemu)"); status=1; fi
}

run "gcc, dotprod build, dotprod CPU" max "$out/neon_check_dot" --expect-dot 1
run "gcc, dotprod build, dotprod disabled" max "$out/neon_check_dot" --no-dotprod --expect-dot 0
run "gcc, baseline build, CPU without dotprod" cortex-a53 "$out/neon_check_base" --expect-dot 0
if [ -n "$clang_bin" ]; then
    run "clang ($("$clang_bin" --version | head -1 | sed 's/ (.*//')), baseline build, dotprod CPU" max "$out/neon_check_clang" --expect-dot 1
else
    summary+=("SKIP  clang build (no clang able to link for aarch64-linux-gnu; see $out/clang.log)")
fi

echo
echo "== check-neon summary"
printf '%s\n' "${summary[@]}"
exit $status
