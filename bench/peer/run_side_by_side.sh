#!/usr/bin/env bash
# Side by side with the original bilm-tf (issue 12): one sitting, same
# machine, same configurations; `make side-by-side` runs it, then summarize.py.
#
# usage (from anywhere):
#   PEER=/work/peer bench/peer/run_side_by_side.sh [STAGES]
# STAGES (default "prep smoke matmul a b c d"):
#   prep    PTB as bilm-tf input ($PEER/data/ptb) and elmo_tf's prepared PTB
#   smoke   both sides end to end at toy size, in seconds: train, save,
#           dump (bilm-tf) / export (elmo_tf), embed 40 sentences
#   matmul  float32 / bfloat16 matmul GFLOP/s and the oneDNN kernel
#   a       paper `small` size, float32, both sides            (REPS runs)
#   b       elmo_tf `small` in mixed_bfloat16 (bilm-tf has none) (REPS runs)
#   c       bilm-tf's 256/64 reference size, float32, both sides (REPS runs)
#   d       embedding throughput at batch 32, `small` size: bilm-tf weights
#           dumped from stage a's checkpoint, elmo_tf's SavedModel exported
#           from stage a's run (so d needs a first)           (REPS runs)
#   e       the published `medium` size (2 x 2048/256, 2048 filters, 1
#           highway), float32, both sides, 8192 negatives    (REPS runs)
#   f       the published `original` size, the paper's (2 x 4096/512,
#           2048 filters, 2 highway), float32, both sides, 8192
#           negatives                                        (REPS runs)
#   g       embedding throughput at batch 32, `original` size: random
#           weights in the published hdf5 format (bench/import_hdf5_bench
#           .py), read by bilm-tf as they are and by elmo_tf through
#           bin/import_hdf5 (with the PTB vocabulary, as a user with a
#           vocabulary would); NS_LARGE sentences             (REPS runs)
#
# $PEER must hold bilm-tf/: allenai/bilm-tf at 7cffee2 with the harness's
# bilm-tf-tf2.patch applied (DEVELOPERS.md, "Side by side with bilm-tf").
# The bilm-tf side runs the shared harness scripts ($HARNESS); the elmo_tf
# side runs this folder's copies (python -m bench.peer.*), which follow
# today's Trainer API. JSON and logs go to $PEER/results/, and
# $PEER/results/commands.tsv lists every command run (stage, run, command).
# Nothing else should run on the machine meanwhile: the figures that count
# are ratios from one sitting.
#
# env: PEER (required), PROJECT (elmo_tf checkout with .venv; default this
# repository), HARNESS (default /work/shared/peer-harness), K timed steps per
# run (30; K_LARGE in stages e and f, 10, whose steps take seconds), REPS
# runs per configuration (2), NS sentences embedded in d (1024), NS_LARGE
# in g (256), FRESH=1
# (move an existing $PEER/results aside first; `make side-by-side` sets it
# unless SIDE_BY_SIDE_FRESH=0), THREADS (if set: TF_NUM_INTRAOP_THREADS and
# TF_NUM_INTEROP_THREADS for both sides; default TensorFlow's own choice).
set -euo pipefail
PEER=${PEER:?set PEER to a scratch dir holding bilm-tf/}
PEER=$(cd "$PEER" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
PROJECT=${PROJECT:-$(cd "$HERE/../.." && pwd)}
HARNESS=${HARNESS:-/work/shared/peer-harness}
PY=$PROJECT/.venv/bin/python
H=$HARNESS
R=$PEER/results
D=$PEER/data/ptb
K=${K:-30}
K_LARGE=${K_LARGE:-10}
REPS=${REPS:-2}
NS=${NS:-1024}
NS_LARGE=${NS_LARGE:-256}
STAGES=${1:-"prep smoke matmul a b c d"}
if [ "${FRESH:-0}" = 1 ] && [ -d "$R" ]; then
  # A new sitting starts a new results folder; the old one is kept aside.
  mv "$R" "$R.$(date -u -r "$R" +%Y%m%dT%H%M%S)"
fi
mkdir -p "$R"
export TF_CPP_MIN_LOG_LEVEL=2 PY PEER
if [ -n "${THREADS:-}" ]; then
  export TF_NUM_INTRAOP_THREADS=$THREADS TF_NUM_INTEROP_THREADS=$THREADS
fi
[ -f "$PEER/bilm-tf/bilm/__init__.py" ] || {
  echo "no bilm-tf in $PEER/bilm-tf (DEVELOPERS.md: Side by side with bilm-tf)" >&2
  exit 1; }
[ -f "$H/bilm_train_bench.py" ] || { echo "no peer harness at $H" >&2; exit 1; }

ts() { date -u +%H:%M:%S; }
# Every command is appended to commands.tsv: stage<TAB>run<TAB>command.
log_cmd() { local key=$1; shift; printf '%s\t%s\n' "$key" "$*" >> "$R/commands.tsv"; }
bilm() {  # KEY CMD...: bilm-tf side, legacy Keras + the patched copy on PYTHONPATH
  local key=$1; shift; log_cmd "$key" "$@"
  (cd "$PEER" && TF_USE_LEGACY_KERAS=1 PYTHONPATH=$PEER/bilm-tf BILM_DIR=$PEER/bilm-tf "$@")
}
elmo() {  # KEY CMD...: elmo_tf side, Keras 3, repository root as cwd
  local key=$1; shift; log_cmd "$key" "$@"
  (cd "$PROJECT" && env -u TF_USE_LEGACY_KERAS "$@")
}
has() { [[ " $STAGES " == *" $1 "* ]]; }
result() { grep RESULT || { echo "FAILED: see the log named above" >&2; return 1; }; }

# The stage configurations: the same as the harness's run_bench.sh.
SMALL_BILM=(--lstm_dim 1024 --proj_dim 128 --filters original --n_highway 1 --char_embed_dim 16
  --cell_clip 3 --proj_clip 3 --skip_connections 1 --dropout 0.1 --batch_size 32 --unroll_steps 20
  --n_negative_samples 1024 --n_batches "$K" --warmup 3)
SMALL_ELMO=(--preset small --set data.batching='"stream"' --set data.batch_size=32
  --set data.unroll_steps=20 --set model.n_negative_samples=1024 --set model.dropout=0.1
  --set model.char_cnn.n_highway=1 --set model.char_cnn.embedding_dim=16
  --set 'model.char_cnn.filters=[[1,32],[2,32],[3,64],[4,128],[5,256],[6,512],[7,1024]]'
  --set model.lstm.cell_dim=1024 --set model.lstm.projection_dim=128 --set model.lstm.n_layers=2
  --set model.lstm.cell_clip=3 --set model.lstm.projection_clip=3 --set model.lstm.use_residual=true
  --set train.optimizer='"adagrad"' --set train.learning_rate=0.2 --set train.clip_norm=10
  --steps "$K" --warmup 3)
TINY_BILM=(--lstm_dim 256 --proj_dim 64 --filters small --n_highway 1 --char_embed_dim 16
  --cell_clip 3 --proj_clip 3 --skip_connections 1 --dropout 0.1 --batch_size 32 --unroll_steps 20
  --n_negative_samples 256 --n_batches "$K" --warmup 3)
TINY_ELMO=(--preset cpu_fast --set data.batching='"stream"' --set data.batch_size=32
  --set data.unroll_steps=20 --set model.n_negative_samples=256 --set model.dropout=0.1
  --set model.char_cnn.n_highway=1 --set model.char_cnn.embedding_dim=16
  --set 'model.char_cnn.filters=[[1,16],[2,16],[3,32],[4,64]]'
  --set model.lstm.cell_dim=256 --set model.lstm.projection_dim=64 --set model.lstm.n_layers=2
  --set model.lstm.cell_clip=3 --set model.lstm.projection_clip=3 --set model.lstm.use_residual=true
  --set train.optimizer='"adagrad"' --set train.learning_rate=0.2 --set train.clip_norm=10
  --steps "$K" --warmup 3)
# The published larger sizes (bilm-tf's defaults but the batch: 32 x 20 as in
# the other stages; 8192 negatives, bilm-tf's and the paper's).
large_bilm() {  # LSTM_DIM PROJ_DIM N_HIGHWAY: one argument per line
  printf '%s\n' --lstm_dim "$1" --proj_dim "$2" --filters original --n_highway "$3" \
    --char_embed_dim 16 --cell_clip 3 --proj_clip 3 --skip_connections 1 --dropout 0.1 \
    --batch_size 32 --unroll_steps 20 --n_negative_samples 8192 --n_batches "$K_LARGE" --warmup 2
}
large_elmo() {  # PRESET LSTM_DIM PROJ_DIM N_HIGHWAY: one argument per line
  printf '%s\n' --preset "$1" --set data.batching='"stream"' --set data.batch_size=32 \
    --set data.unroll_steps=20 --set model.n_negative_samples=8192 --set model.dropout=0.1 \
    --set model.char_cnn.n_highway="$4" --set model.char_cnn.embedding_dim=16 \
    --set 'model.char_cnn.filters=[[1,32],[2,32],[3,64],[4,128],[5,256],[6,512],[7,1024]]' \
    --set model.lstm.cell_dim="$2" --set model.lstm.projection_dim="$3" --set model.lstm.n_layers=2 \
    --set model.lstm.cell_clip=3 --set model.lstm.projection_clip=3 --set model.lstm.use_residual=true \
    --set train.optimizer='"adagrad"' --set train.learning_rate=0.2 --set train.clip_norm=10 \
    --steps "$K_LARGE" --warmup 2
}
# Toy size for the smoke stage (seconds per side).
TOY_BILM=(--lstm_dim 16 --proj_dim 8 --filters small --n_highway 1 --batch_size 2
  --unroll_steps 10 --n_negative_samples 16 --n_batches 2 --warmup 1)
TOY_ELMO=(--preset tiny --set data.batch_size=8 --steps 2 --warmup 1)

# The sitting's record (summarize.py reads it).
"$PY" - "$R/sitting.json" "$STAGES" "$K" "$K_LARGE" "$REPS" "$NS" "$NS_LARGE" "$PROJECT" "$HARNESS" "$PEER" <<'EOF'
import datetime, json, os, subprocess, sys
path, stages, k, k_large, reps, ns, ns_large, project, harness, peer = sys.argv[1:]
old = json.load(open(path)) if os.path.exists(path) else {}
# The elmo_tf code the sitting times: its commit, and whether tracked files
# other than results differ from it.
git = lambda *a: subprocess.run(["git", "-C", project, *a], capture_output=True,
                                text=True).stdout.strip()
commit = git("rev-parse", "HEAD") or None
dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", ".",
                 ":(exclude)bench/results")) if commit else None
old.setdefault("sittings", []).append({
    "start": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "stages": stages.split(), "K": int(k), "K_LARGE": int(k_large), "REPS": int(reps), "NS": int(ns),
    "NS_LARGE": int(ns_large),
    "project": project, "harness": harness, "peer": peer,
    "threads": os.environ.get("TF_NUM_INTRAOP_THREADS"),
    "elmo_tf_commit": commit, "elmo_tf_uncommitted_changes": dirty,
    "command": os.environ.get("SIDE_BY_SIDE_COMMAND", "bench/peer/run_side_by_side.sh")})
json.dump(old, open(path, "w"), indent=1)
EOF

echo "== start $(ts) stages: $STAGES (K=$K, REPS=$REPS) results: $R"
if has prep; then
  echo "-- prep $(ts)"
  [ -f "$D/vocab.txt" ] || "$PY" "$H/make_ptb_data.py" --out_dir "$D" | tail -3
  wc -l "$D"/*.txt
  # elmo_tf's own prepared PTB (cached; make_trainer would prepare it on
  # first use, inside the first run's build time).
  elmo prep "$PY" -c "from elmo_tf import config, prepare
print(prepare.ensure_prepared(config.DataConfig(corpus='ptb')).directory)" 2>/dev/null
fi
if has smoke; then
  echo "-- smoke $(ts): toy size end to end"
  S=$PEER/smoke
  rm -rf "$S"; mkdir -p "$S"
  bilm smoke "$PY" "$H/bilm_train_bench.py" --train_prefix "$D/train.txt" --vocab "$D/vocab.txt" \
    "${TOY_BILM[@]}" --save_dir "$S/ckpt_bilm" \
    --out "$R/smoke_bilm.json" 2>"$R/smoke_bilm.log" | result
  elmo smoke "$PY" -m bench.peer.elmo_train_bench "${TOY_ELMO[@]}" --keep_model_dir "$S/elmo_run" \
    --out "$R/smoke_elmo.json" 2>"$R/smoke_elmo.log" | result
  bilm smoke "$H/bilm_dump_weights.sh" "$S/ckpt_bilm" "$S/bilm_model/lm_weights.hdf5" \
    "$S/bilm_model/options.json" > "$R/smoke_dump_bilm.log" 2>&1
  grep -E 'wrote|datasets' "$R/smoke_dump_bilm.log"
  elmo smoke "$PY" -m bin.export --model_dir="$S/elmo_run" --out="$S/elmo_sm" \
    > "$R/smoke_export_elmo.log" 2>&1
  grep SavedModel: "$R/smoke_export_elmo.log"
  bilm smoke "$PY" "$H/bilm_embed_bench.py" --options "$S/bilm_model/options.json" \
    --weights "$S/bilm_model/lm_weights.hdf5" --vocab "$D/vocab.txt" \
    --sentences "$D/test.txt" --max_sentences 40 --batch_size 32 \
    --out "$R/smoke_bilm_embed.json" 2>"$R/smoke_bilm_embed.log" | result
  elmo smoke "$PY" -m bench.peer.elmo_embed_bench --saved_model "$S/elmo_sm" \
    --sentences "$D/test.txt" --max_sentences 40 --batch_size 32 --latency_calls 10 \
    --out "$R/smoke_elmo_embed.json" 2>"$R/smoke_elmo_embed.log" | result
fi
if has matmul; then
  echo "-- matmul $(ts)"
  rm -f "$R/matmul.txt"
  for i in $(seq "$REPS"); do
    elmo matmul "$PY" "$H/matmul_check.py" 2>/dev/null | grep MATMUL | tee -a "$R/matmul.txt"
  done
  # The oneDNN kernel (ISA) actually used for a bf16 and an fp32 matmul.
  elmo matmul env ONEDNN_VERBOSE=1 "$PY" -c "
import tensorflow as tf
a=tf.random.normal((512,512))
@tf.function
def f(x): return tf.matmul(x,x)
f(tf.cast(a,tf.bfloat16)).numpy(); f(a).numpy()" > "$R/onednn_verbose.txt" 2>&1 || true
  grep -iE "info,cpu|isa|matmul|gemm" "$R/onednn_verbose.txt" | head -12 || echo "no oneDNN verbose lines"
fi
if has a; then
  for i in $(seq "$REPS"); do
    echo "-- (a) small fp32 run $i $(ts)"
    # Run 1 keeps its checkpoint / run directory for stage d.
    extra=(); [ "$i" = 1 ] && { rm -rf "$PEER/ckpt_small_bilm"; extra=(--save_dir "$PEER/ckpt_small_bilm"); }
    bilm "a$i" "$PY" "$H/bilm_train_bench.py" --train_prefix "$D/train.txt" --vocab "$D/vocab.txt" \
      "${SMALL_BILM[@]}" "${extra[@]}" \
      --out "$R/a_bilm_small_$i.json" 2>"$R/a_bilm_small_$i.log" | result
    extra=(); [ "$i" = 1 ] && { rm -rf "$PEER/elmo_small_run"; extra=(--keep_model_dir "$PEER/elmo_small_run"); }
    elmo "a$i" "$PY" -m bench.peer.elmo_train_bench "${SMALL_ELMO[@]}" "${extra[@]}" \
      --out "$R/a_elmo_small_$i.json" 2>"$R/a_elmo_small_$i.log" | result
  done
fi
if has b; then
  for i in $(seq "$REPS"); do
    echo "-- (b) small mixed_bfloat16 run $i $(ts)"
    elmo "b$i" "$PY" -m bench.peer.elmo_train_bench "${SMALL_ELMO[@]}" --precision mixed_bfloat16 \
      --out "$R/b_elmo_small_bf16_$i.json" 2>"$R/b_elmo_small_bf16_$i.log" | result
  done
fi
# Float32 training on both sides, REPS runs (stages c, e, f): LETTER LABEL
# NAME (of the result files) and the names of the two sides' argument arrays.
train_both_sides() {
  local letter=$1 label=$2 name=$3 i
  local -n bilm_args=$4 elmo_args=$5
  for i in $(seq "$REPS"); do
    echo "-- ($letter) $label fp32 run $i $(ts)"
    bilm "$letter$i" "$PY" "$H/bilm_train_bench.py" --train_prefix "$D/train.txt" --vocab "$D/vocab.txt" \
      "${bilm_args[@]}" --out "$R/${letter}_bilm_${name}_$i.json" 2>"$R/${letter}_bilm_${name}_$i.log" | result
    elmo "$letter$i" "$PY" -m bench.peer.elmo_train_bench "${elmo_args[@]}" \
      --out "$R/${letter}_elmo_${name}_$i.json" 2>"$R/${letter}_elmo_${name}_$i.log" | result
  done
}
if has c; then train_both_sides c 256/64 tiny TINY_BILM TINY_ELMO; fi
# Embedding on both sides at batch 32, REPS runs (stages d, g): LETTER,
# sentences embedded, bilm-tf's options.json and hdf5, elmo_tf's SavedModel.
embed_both_sides() {
  local letter=$1 n_sentences=$2 options=$3 weights=$4 saved_model=$5 i
  for i in $(seq "$REPS"); do
    echo "-- ($letter) embed run $i $(ts)"
    bilm "$letter$i" "$PY" "$H/bilm_embed_bench.py" --options "$options" \
      --weights "$weights" --vocab "$D/vocab.txt" \
      --sentences "$D/test.txt" --max_sentences "$n_sentences" --batch_size 32 \
      --out "$R/${letter}_bilm_embed_$i.json" 2>"$R/${letter}_bilm_embed_$i.log" | result
    elmo "$letter$i" "$PY" -m bench.peer.elmo_embed_bench --saved_model "$saved_model" \
      --sentences "$D/test.txt" --max_sentences "$n_sentences" --batch_size 32 \
      --out "$R/${letter}_elmo_embed_$i.json" 2>"$R/${letter}_elmo_embed_$i.log" | result
  done
}
if has d; then
  echo "-- (d) dump / export $(ts)"
  [ -f "$PEER/ckpt_small_bilm/options.json" ] && [ -d "$PEER/elmo_small_run" ] || {
    echo "stage d needs stage a's run 1 ($PEER/ckpt_small_bilm, $PEER/elmo_small_run)" >&2
    exit 1; }
  bilm d "$H/bilm_dump_weights.sh" "$PEER/ckpt_small_bilm" "$PEER/models/bilm_small/lm_weights.hdf5" \
    "$PEER/models/bilm_small/options.json" > "$R/d_dump_bilm.log" 2>&1
  grep -E 'wrote|datasets' "$R/d_dump_bilm.log"
  rm -rf "$PEER/models/elmo_small_sm"
  elmo d "$PY" -m bin.export --model_dir="$PEER/elmo_small_run" --out="$PEER/models/elmo_small_sm" \
    > "$R/d_export_elmo.log" 2>&1
  grep SavedModel: "$R/d_export_elmo.log"
  embed_both_sides d "$NS" "$PEER/models/bilm_small/options.json" \
    "$PEER/models/bilm_small/lm_weights.hdf5" "$PEER/models/elmo_small_sm"
fi
# e, f: the larger published sizes.
if has e; then
  mapfile -t MEDIUM_BILM < <(large_bilm 2048 256 1)
  mapfile -t MEDIUM_ELMO < <(large_elmo medium 2048 256 1)
  train_both_sides e medium medium MEDIUM_BILM MEDIUM_ELMO
fi
if has f; then
  mapfile -t ORIGINAL_BILM < <(large_bilm 4096 512 2)
  mapfile -t ORIGINAL_ELMO < <(large_elmo original 4096 512 2)
  train_both_sides f original original ORIGINAL_BILM ORIGINAL_ELMO
fi
# g: embedding at the paper's `original` size.
if has g; then
  echo "-- (g) original-size weights, import $(ts)"
  G=$PEER/models/original_random
  rm -rf "$G" && mkdir -p "$G"
  elmo g "$PY" -c "from bench import import_hdf5_bench as b; b.write_random_pair('$G', options=b.ORIGINAL_OPTIONS)" \
    > "$R/g_weights.log" 2>&1
  elmo g "$PY" -m bin.import_hdf5 --options="$G/options.json" --weights="$G/weights.hdf5" \
    --vocab="$D/vocab.txt" --out="$G/elmo_sm" > "$R/g_import_elmo.log" 2>&1
  grep -i savedmodel "$R/g_import_elmo.log" | tail -1
  embed_both_sides g "$NS_LARGE" "$G/options.json" "$G/weights.hdf5" "$G/elmo_sm"
fi
echo "== done $(ts)"
