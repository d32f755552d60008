#!/usr/bin/env bash
# Issue 6's GPU checks as ONE prepared command: about 4-8 minutes on one H200, every step under a timeout
# cut to what is left of a 540 s budget, so a slow step cannot eat the lease. Through the device tool:
#   run(command="bash scripts/gpu_checks.sh", timeout_s=600, carry=[".whl"])
# The GPU image's python3 has torch, torchvision, pandas, scikit-learn, tensorboard, pyyaml, tqdm and
# matplotlib, but not monai or pydicom, which the training runs need (gpu_bench.py does not). Before the
# call, here, put their wheels in the git-ignored .whl/ (both pure Python):
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl monai==1.6.1 pydicom==3.0.2
# Without them the training runs are skipped, and the log says so. What comes back under $OUT:
#   log.txt; gpu_bench.json (bf16 + channels_last), gpu_bench_nchw.json (bf16, NCHW), gpu_bench_compile.json
#   (torch.compile, last since compiling is slow); report.md + metrics.csv of a 3-epoch 224 px DenseNet121 run
#   on the bundled PneumoniaMNIST 1:36 cohort (demo config: augmentation on, baseline and kNN too), and
#   metrics_cached.csv of the same run with augmentation off and train.feature_cache=true.
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_checks}
PY=${PY:-python3}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
END=$((SECONDS + 540))

# step NAME CAP_SECONDS CMD...: run under min(CAP, time left); a failure is logged, not fatal.
step() {
  local name=$1 cap=$2 left=$((END - SECONDS))
  shift 2
  ((left < cap)) && cap=$left
  if ((cap < 20)); then echo "== $name: skipped, ${left}s left"; return 1; fi
  echo "== $name (up to ${cap}s): $*"
  local t0=$SECONDS rc=0
  timeout "$cap" "$@" || rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0))s"
  return $rc
}

nvidia-smi -L || true
$PY -c "import sys, torch, torchvision
print(sys.version.split()[0], torch.__version__, torchvision.__version__, torch.cuda.get_device_name())"

step gpu_bench 180 $PY scripts/gpu_bench.py --out "$OUT/gpu_bench.json"
step gpu_bench_nchw 90 $PY scripts/gpu_bench.py --no-channels-last --variants naive,feature_cache \
  --out "$OUT/gpu_bench_nchw.json"

if ! $PY -c "import monai, pydicom" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
if $PY -c "import monai, pydicom" 2>/dev/null; then
  COHORT=cohorts/pneumoniamnist_1to36/cohort.csv
  if [ ! -f "$COHORT" ]; then
    COHORT=/tmp/pneumoniamnist_1to36/cohort.csv
    $PY scripts/build_cohort.py --medmnist egan_med/bundled/pneumoniamnist_28.npz --minority 1 --majority 0 \
      --ratio 36 --out /tmp/pneumoniamnist_1to36 --overwrite
  fi
  # ImageNet weights only if the hub cache has them (nothing can be downloaded there); speed is the same.
  WEIGHTS=none
  [ -f "$($PY -c 'import torch; print(torch.hub.get_dir())')/checkpoints/densenet121-a639ec97.pth" ] && WEIGHTS=imagenet
  RUN=(configs/demo.yaml "data.cohort=$COHORT" data.image_size=224 model.encoder=densenet121
       model.discriminator=densenet121 "model.weights=$WEIGHTS" model.trainable_blocks=2 train.epochs=3
       data.num_workers=8)
  step train_demo 150 $PY -m egan_med.train "${RUN[@]}" --out /tmp/run_demo --force \
    && cp /tmp/run_demo/report.md /tmp/run_demo/metrics.csv "$OUT/"
  step train_cached 90 $PY -m egan_med.train "${RUN[@]}" data.augment=false train.feature_cache=true \
    eval.baseline=false eval.knn=false --out /tmp/run_cached --force \
    && cp /tmp/run_cached/metrics.csv "$OUT/metrics_cached.csv"
  for f in "$OUT"/metrics*.csv; do echo "-- $f"; cut -d, -f1-6 "$f"; done
else
  echo "== training runs skipped: monai/pydicom missing and no .whl/ wheels carried"
fi

step gpu_bench_compile 240 $PY scripts/gpu_bench.py --compile --variants feature_cache \
  --out "$OUT/gpu_bench_compile.json"
echo "== done in ${SECONDS}s"
