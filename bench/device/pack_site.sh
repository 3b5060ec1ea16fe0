#!/usr/bin/env bash
# Pack what a lent GPU machine lacks into one archive that a device call carries:
#   bench/device/pack_site.sh           (here, with the package index; about 3 minutes)
# -> .devsite/site.tar.xz (ignored by git): bench/device/requirements.txt installed for the device's
# Python 3.12, unpacked (pip --target, no bytecode), then xz-compressed as one solid archive, because
# the same wheels as .whl files are about 120 MB and a device call carries at most 64 MiB with the
# working tree. bench/run_gpu.sh unpacks it to /tmp/site when it is there. Device call:
#   run(command='bench/run_gpu.sh "$OUT"', carry=[".devsite"], timeout_s=590)   (its parts: at most 565 s)
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=.devsite
limit_mib=58  # the device's 64 MiB, less the working tree and some room
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  platforms+=(--platform "${tag}_x86_64")
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${platforms[@]}" -d "$work/wheels" -r bench/device/requirements.txt
python3 -m pip install --quiet --no-index --no-deps --no-compile --only-binary=:all: \
  --python-version 3.12 --implementation cp "${platforms[@]}" --target "$work/site" "$work"/wheels/*.whl
# silero-vad ships seven models; the proposals load only its TorchScript one (load_silero_vad()).
rm -f "$work"/site/silero_vad/data/*.onnx
mkdir -p "$dest"
tar -C "$work/site" -cf - . | xz -9 -T0 >"$dest/site.tar.xz"
size=$(stat -c %s "$dest/site.tar.xz")
echo "$dest/site.tar.xz: $((size / 1048576)) MiB ($(grep -vc '^#' bench/device/requirements.txt) distributions)"
if ((size > limit_mib * 1048576)); then
  echo "over ${limit_mib} MiB: the device call would not carry it; trim bench/device/resolve.py's list" >&2
  exit 1
fi
