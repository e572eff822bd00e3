#!/bin/sh
# Build llama.cpp's C++ `llama-server` (CPU only) from the llama.cpp sources vendored in the
# llama-cpp-python sdist on PyPI, the same llama.cpp that bench/peers.py measures through
# llama-cpp-python. bench/online_peers.py runs it as the concurrent serving peer.
#
#     bench/build_llama_server.sh [OUT_DIR]     # default /work/shared/llama-server
#     bench/build_llama_server.sh --isa         # only print the instruction-set cmake flags it would use
#
# About 10 minutes with -j2 on a 2-core machine. Nothing is written into the repository.
# Environment: VERSION (default 0.3.36), DOWNLOAD_DIR (default /tmp/llamadl; pip skips the
# download when the sdist is already there), BUILD_DIR (default: a new temporary directory).
set -eu

VERSION=${VERSION:-0.3.36}
OUT_DIR=${1:-/work/shared/llama-server}
DOWNLOAD_DIR=${DOWNLOAD_DIR:-/tmp/llamadl}
BUILD_DIR=${BUILD_DIR:-$(mktemp -d)}
SDIST=$DOWNLOAD_DIR/llama_cpp_python-$VERSION.tar.gz

# Static libraries (BUILD_SHARED_LIBS=OFF): the binary needs no libllama/libggml beside it.
# GGML_NATIVE=ON (the default, as llama-cpp-python builds from source): tuned for this CPU, except
# on a CPU that lists AMX: virtual machines may refuse its tile instructions (ggml's AMX path then dies
# with SIGILL on the first batched product), so there the build names every other ISA extension
# the CPU lists instead. llama-cpp-python itself: pip install with CMAKE_ARGS="$(bench/build_llama_server.sh --isa)".
# No UI assets (they would be fetched from Hugging Face at build time), no OpenSSL (no HTTPS
# model downloads). LLAMA_CURL no longer exists in this llama.cpp (a deprecated no-op).
isa_flags() {
    if ! grep -qw amx_tile /proc/cpuinfo; then echo "-DGGML_NATIVE=ON"; return; fi
    flags="-DGGML_NATIVE=OFF"
    for pair in avx:AVX avx2:AVX2 bmi2:BMI2 fma:FMA f16c:F16C avx512f:AVX512 avx512vbmi:AVX512_VBMI \
                avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16 avx_vnni:AVX_VNNI; do
        if grep -qw "${pair%%:*}" /proc/cpuinfo; then flags="$flags -DGGML_${pair#*:}=ON"; fi
    done
    echo "$flags"
}
if [ "${1:-}" = "--isa" ]; then isa_flags; exit 0; fi

CMAKE_FLAGS="-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF $(isa_flags)
 -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
 -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF"

python -m pip download --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$DOWNLOAD_DIR"
mkdir -p "$BUILD_DIR"
tar xzf "$SDIST" -C "$BUILD_DIR"
SRC=$BUILD_DIR/llama_cpp_python-$VERSION/vendor/llama.cpp

start=$(date +%s)
# shellcheck disable=SC2086
cmake -S "$SRC" -B "$BUILD_DIR/build" $CMAKE_FLAGS
cmake --build "$BUILD_DIR/build" --target llama-server -j2
seconds=$(( $(date +%s) - start ))

mkdir -p "$OUT_DIR"
cp "$BUILD_DIR/build/bin/llama-server" "$OUT_DIR/"
cat > "$OUT_DIR/README.txt" <<EOF
llama-server: llama.cpp's C++ OpenAI-compatible server, CPU only.

Built by bench/build_llama_server.sh (ingot repo) on $(date -u +%Y-%m-%d) on $(uname -m), in ${seconds} s,
from the llama.cpp sources vendored in the PyPI sdist llama-cpp-python==$VERSION
($(basename "$SDIST"), sha256 $(sha256sum "$SDIST" | cut -d' ' -f1)).
llama.cpp build: $("$OUT_DIR/llama-server" --version 2>&1 | tr '\n' ' ')

cmake flags: $(echo $CMAKE_FLAGS)
cmake --build build --target llama-server -j2

Static ggml/llama libraries: the binary needs only the system C/C++ runtime and libgomp
(ldd: $(ldd "$OUT_DIR/llama-server" | awk '{print $1}' | tr '\n' ' ')).
Compiled for the building CPU's instruction set: rebuild on a different CPU.
EOF
echo "built $OUT_DIR/llama-server in ${seconds} s"
