#!/usr/bin/env bash
# Issue 12's throughput acceptance on a GPU, prepared for one call of the device tool: every
# edit kind at 800x800, batch 64, donated, against its one-image-at-a-time numpy/Pillow peer
# measured in the same invocation (`scripts.profile_throughput --stage corrupt --peers`; on a
# GPU the batch runs the vmap schedule). One region per call, so that each call ends well
# inside the tool's 10-minute limit (on 2 CPU cores one kind takes 20-60 s).
#
#   bash scripts/gpu_edit_checks.sh square|free [KIND ...]
#
# Writes $OUT/edits_<region>.jsonl (each kind's JSON line) and $OUT/edits_<region>.log (the
# tables), $OUT being the device tool's output folder (./gpu_edit_checks here).
#
# Before the call, here: the numpy peer of discolor/white_box/scramble lives in ../shared/peers,
# which does not travel; carry a copy (device_shared/ is git-ignored):
#   mkdir -p device_shared && cp -r ../shared/peers device_shared/
# then run(command="bash scripts/gpu_edit_checks.sh square", carry=["device_shared"],
# timeout_s=570), and the same with "free". The stage needs neither grain nor orbax, so no
# wheels travel. Figures go to docs/PERFORMANCE.md ("Issue 12's edits").
set -uo pipefail
region=${1:?usage: bash scripts/gpu_edit_checks.sh square|free [KIND ...]}
shift
kinds=("$@")
if [ ${#kinds[@]} -eq 0 ]; then  # every kind the library has, and the mix
    read -r -a kinds < <(python3 -c "from anomaly_jax.config import KIND_ORDER, MIX_KIND
print(*KIND_ORDER, MIX_KIND)")
fi
out=${OUT:-gpu_edit_checks}
mkdir -p "$out"
if [ ! -d ../shared/peers ] && [ -d device_shared/peers ]; then
    mkdir -p ../shared && cp -r device_shared/peers ../shared/
fi
python3 -c "import jax; print('devices:', jax.devices())" | tee -a "$out/edits_$region.log"
status=0
for kind in "${kinds[@]}"; do
    echo "== $kind $region" >> "$out/edits_$region.log"
    if python3 -m scripts.profile_throughput --stage corrupt --peers \
            --set "corruption.kind=$kind" --set "corruption.region=$region" \
            --set data.image_size=800 --batch 64 --steps 3 \
            > "$out/last.json" 2>> "$out/edits_$region.log"; then
        tail -n 1 "$out/last.json" >> "$out/edits_$region.jsonl"
    else
        echo "$kind $region failed (see edits_$region.log)" | tee -a "$out/edits_$region.log"
        status=1
    fi
done
rm -f "$out/last.json"
exit $status
