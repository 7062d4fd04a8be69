"""Exports an elmo_tf model in the published ELMo format (options.json + hdf5).

  python -m bin.export_hdf5 --saved_model=savedmodels/ptb --out=ptb_hdf5
  python -m bin.export_hdf5 --model_dir=runs/ptb_cpu_small --out=ptb_hdf5 \
      --with_softmax
  bazel run //bin:export_hdf5 -- --saved_model=savedmodels/ptb --out=ptb_hdf5

Writes into --out (created; these files are replaced, any other file there
is an error):
  options.json   bilm-tf's hyper-parameters (262 character ids)
  weights.hdf5   char_embed, CNN/..., CNN_high_k/..., CNN_proj/...,
                 RNN_d/RNN/MultiRNNCell/Cell{l}/LSTMCell/{W_0,B,W_P_0}
  vocab.txt      the model's vocabulary (bilm-tf's Batcher needs one)
  softmax.hdf5   with --with_softmax: softmax/W (V, P), softmax/b (V,), rows
                 in vocab.txt's order
readable by bilm-tf's BidirectionalLanguageModel(options, weights) and
AllenNLP's Elmo(options, weights, ...). bin/import_hdf5 reads them back.
A SavedModel keeps the softmax only if it was exported from a training run
with it (bin/export); --model_dir always has it. Models with
token_encoder concat or sum have no counterpart in the format.
"""

from absl import app
from absl import flags
from absl import logging

from bin import flag_utils
from bin import inference_flags

_WITH_SOFTMAX = flags.DEFINE_bool(
    "with_softmax", False, "Also write the softmax (softmax.hdf5), e.g. to "
    "score sentences with the exported model.")
_OUT = flag_utils.OUT  # --out: the output directory.


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  inference_flags.required(_OUT)
  path = inference_flags.model_path()
  out_dir = flag_utils.resolve_path(_OUT.value)
  from elmo_tf import checkpoints  # Late: TensorFlow start-up.
  from elmo_tf import hdf5_weights
  try:
    written = hdf5_weights.export_hdf5(path, out_dir,
                                       with_softmax=_WITH_SOFTMAX.value)
  except (ValueError, checkpoints.TrainingError) as e:
    logging.error("%s", e)
    return 1
  print("\n" + "\n".join(f"{name:<13} {written[name]}"
                         for name in sorted(written)))
  return 0


if __name__ == "__main__":
  app.run(main)
