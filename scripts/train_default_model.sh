#!/usr/bin/env bash
# The default model's recipe in one call: render the scene cache, then the two curriculum stages
# (pose-first on random 2-10-frame subsets of each sequence with the correspondence losses, the relative-pose
# angle loss and the 3D point probes, dense heads off; then joint training with the dense heads on 2-8-frame
# subsets), then a held-out evaluation. Everything lands in $OUT: stage1/ and stage2/ (train_log.json,
# model.safetensors), eval.json, run.log. Learning rates decay (cosine) over each stage's whole length.
#
#   GPU (one Hopper; the wall time of this recipe is not measured yet):  OUT=/path bash scripts/train_default_model.sh
#   CPU check of the same path:     DEVICE=cpu PRECISION=fp32 SCENES=8 STAGE1_STEPS=4 STAGE2_STEPS=4 \
#                                   BATCH=2 EVAL_SCENES=1 OUT=/tmp/check bash scripts/train_default_model.sh
#
# Needs Python with torch, numpy, safetensors, pillow and scikit-learn (its sample photographs are the
# scenes' photo textures); runs from the source tree, nothing is installed. Re-running resumes every step.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:?set OUT to the folder that receives the weights and logs}
DEVICE=${DEVICE:-cuda}
PRECISION=${PRECISION:-bf16}
SCENES=${SCENES:-2400}
WORKERS=${WORKERS:-$(nproc)}
BATCH=${BATCH:-32}
STAGE1_STEPS=${STAGE1_STEPS:-30000}
STAGE2_STEPS=${STAGE2_STEPS:-6000}
EVAL_SCENES=${EVAL_SCENES:-10}
CACHE=${CACHE:-$OUT/scene_cache}
PYTHON=${PYTHON:-python3}

mkdir -p "$OUT"
exec > >(tee -a "$OUT/run.log") 2>&1
"$PYTHON" - <<'EOF'
import importlib, sys
missing = [m for m in ("torch", "numpy", "safetensors", "PIL", "sklearn") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"missing Python packages: {', '.join(missing)} (pip install torch numpy safetensors pillow scikit-learn)")
EOF

train() {  # train STAGE_DIR [args...]: resume an interrupted stage, skip a finished one
    local dir=$1; shift
    if [ -f "$dir/model.safetensors" ]; then echo "$dir: done"; return; fi
    local resume=()
    [ -f "$dir/checkpoint.pt" ] && resume=(--resume)
    PYTHONPATH=. "$PYTHON" -m vggt_quant_core.cli train --out "$dir" --cache "$CACHE" --scenes "$SCENES" \
        --workers "$WORKERS" --device "$DEVICE" --precision "$PRECISION" --batch "$BATCH" \
        --patch-init whitened --clip-per-module --flow 1 --attention 1 --pair 1 --camera-points 1 --frame0-points 1 \
        --sampling subset "${resume[@]}" "$@"
}

started=$(date +%s)
train "$OUT/stage1" --camera-only --steps "$STAGE1_STEPS" --min-frames 2 --max-frames 10 \
    --warmup-steps $((STAGE1_STEPS / 60)) --validate-every $(( STAGE1_STEPS >= 150 ? STAGE1_STEPS / 15 : STAGE1_STEPS ))
train "$OUT/stage2" --init-from "$OUT/stage1/model.safetensors" --steps "$STAGE2_STEPS" --min-frames 2 \
    --max-frames 8 --warmup-steps $((STAGE2_STEPS / 10)) --validate-every $(( STAGE2_STEPS >= 30 ? STAGE2_STEPS / 3 : STAGE2_STEPS ))
PYTHONPATH=. "$PYTHON" -m vggt_quant_core.cli eval --model "$OUT/stage2/model.safetensors" --scenes "$EVAL_SCENES" \
    --frames 10 --textures rich --device "$DEVICE" --json "$OUT/eval.json"
echo "train_default_model: $(( $(date +%s) - started )) s; weights $OUT/stage2/model.safetensors"
