#!/usr/bin/env bash
# The GPU proof kit (issue 14) in one call on a bare GPU machine: install fastpeft (building its
# CUDA extension), then `fastpeft bench --suite proof`, everything into one folder of at most 8
# files (the suite archives what does not fit). Run from the repository root:
#   OUT=proof bash benchmarks/gpu_proof.sh [--budget SECONDS] [any other bench flags]
# Folder: --out DIR or $OUT (default gpu-proof). Install limit: INSTALL_S (default 180 s).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# First, before installing anything: without CUDA nothing here can prove anything.
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null
then
    echo "gpu_proof.sh: no CUDA device (torch.cuda.is_available() is false): run this on a GPU" \
        "machine; on a CPU, 'python -m fastpeft bench --suite proof --smoke' checks the code path" >&2
    exit 2
fi

OUT_DIR=${OUT:-gpu-proof}
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do  # an --out flag wins over $OUT
    [[ ${args[i]} == --out ]] && OUT_DIR=${args[i + 1]:-$OUT_DIR}
    [[ ${args[i]} == --out=* ]] && OUT_DIR=${args[i]#--out=}
done
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1
START=$(date +%s)
log() { echo "[$(($(date +%s) - START)) s] $*" | tee -a "$OUT_DIR/stages.txt"; }

log "install"
timeout "${INSTALL_S:-180}" env MAX_JOBS=16 "$PY" -m pip install -e . --no-build-isolation \
    --no-deps > "$OUT_DIR/install.log" 2>&1
log "install rc=$?"
# fastpeft.kernels exists only through setuptools' package-dir mapping: if the editable install
# did not provide it, point it at the source folder.
"$PY" -c "import fastpeft.kernels" 2>/dev/null || ln -sfn ../kernels fastpeft/kernels
"$PY" -m fastpeft env >> "$OUT_DIR/stages.txt" 2>&1

log "proof suite"
"$PY" -m fastpeft bench --suite proof --out "$OUT_DIR" "$@" 2>&1 | tee "$OUT_DIR/proof.log"
rc=${PIPESTATUS[0]}
log "proof suite rc=$rc"
exit "$rc"
