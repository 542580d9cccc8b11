#!/usr/bin/env bash
# One call on a lent GPU (issue 21, step 1, until the proof kit of issue 14 replaces this):
# install, the `gpu` test tier, the layer and SPIDER benchmarks, everything under ${OUT}.
# Each stage has its own time limit, so a slow stage costs that stage, not the whole call.
# Stage limits (seconds) can be set from the environment: INSTALL_S, TESTS_S, LAYERS_S, SPIDER_S.
set -u
OUT=${OUT:-gpu-proof}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
START=$(date +%s)
log() { echo "[$(($(date +%s) - START)) s] $*" | tee -a "$OUT/stages.txt"; }

log "install"
timeout "${INSTALL_S:-180}" env MAX_JOBS=16 python3 -m pip install -e . --no-build-isolation \
    --no-deps > "$OUT/install.log" 2>&1
log "install rc=$?"
# fastpeft.kernels exists only through setuptools' package-dir mapping: if the editable install
# did not provide it, point it at the source folder.
python3 -c "import fastpeft.kernels" 2>/dev/null || ln -sfn ../kernels fastpeft/kernels
python3 -m fastpeft env >> "$OUT/stages.txt" 2>&1

log "gpu tests"
timeout "${TESTS_S:-200}" python3 -m pytest -m gpu -q -p no:cacheprovider --timeout 90 \
    --junitxml="$OUT/gpu_tests.xml" > "$OUT/gpu_tests.log" 2>&1
log "gpu tests rc=$? $(tail -1 "$OUT/gpu_tests.log")"

log "bench spider"
timeout "${SPIDER_S:-60}" python3 -m fastpeft bench --suite spider --out "$OUT/spider" \
    > "$OUT/bench_spider.log" 2>&1
log "bench spider rc=$?"

log "bench layers"
timeout "${LAYERS_S:-150}" python3 -m fastpeft bench --suite layers --out "$OUT/layers" \
    > "$OUT/bench_layers.log" 2>&1
log "bench layers rc=$?"
# At most 8 files come back from the device tool: the benchmark folders travel as one archive.
tar czf "$OUT/bench.tgz" -C "$OUT" spider layers 2>/dev/null && rm -rf "$OUT/spider" "$OUT/layers"
grep -E "FAILED|Error" "$OUT/gpu_tests.log" | head -20
tail -25 "$OUT/bench_layers.log"
log "done"
