"""Embeds a text file with ELMo: one sentence per line -> hdf5 or .npy.

  python -m bin.embed --saved_model=savedmodels/ptb --input=sentences.txt \
      --output=sentences.hdf5 --layers=all
  python -m bin.embed --model_dir=runs/ptb_cpu_small --input=sentences.txt \
      --output=vectors.npy --layers=mix
  bazel run //bin:embed -- --saved_model=savedmodels/ptb \
      --input=sentences.txt --output=sentences.hdf5

`.hdf5` has the layout of AllenNLP's `elmo` command: one dataset per line
named by its 0-based line number, (L + 1, n_tokens, 2P) for --layers=all and
(n_tokens, 2P) for top, average and mix, plus `sentence_to_index` (JSON).
`.npy` holds one vector per line, the mean over its tokens. See
elmo_tf/embed.py. The output is written under a temporary name and renamed
when complete; an existing output is kept unless --overwrite.
"""

from absl import app
from absl import flags
from absl import logging
import keras

from bin import flag_utils
from bin import inference_flags
from bin import thread_flags
from elmo_tf import embed as embed_lib
from elmo_tf import text_io

_LAYERS = flags.DEFINE_enum(
    "layers", "all", list(embed_lib.LAYER_CHOICES),
    "all: every layer (L + 1, n, 2P); top: the top biLM layer; average: the "
    "mean of all layers; mix: the model's learned weighted sum (`elmo`).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  inference_flags.required(inference_flags.INPUT, inference_flags.OUTPUT)
  thread_flags.configure()
  path = inference_flags.model_path()
  input_path = flag_utils.resolve_path(inference_flags.INPUT.value)
  output_path = flag_utils.resolve_path(inference_flags.OUTPUT.value)
  from elmo_tf import export as export_lib  # Late: TensorFlow start-up.
  try:
    text_io.check_input(input_path)
    module, _, _ = export_lib.load(path)
    total = text_io.count_lines(input_path)
    bar = keras.utils.Progbar(total, stateful_metrics=["sentences/s"],
                              unit_name="line")
    stats = embed_lib.embed_file(
        module, input_path, output_path, layers=_LAYERS.value,
        batch_size=inference_flags.BATCH_SIZE.value,
        on_bad_line=inference_flags.ON_BAD_LINE.value,
        overwrite=inference_flags.OVERWRITE.value,
        progress=lambda done, s: bar.update(
            done, values=[("sentences/s", s.sentences_per_second)]))
  except (text_io.InputError, ValueError) as e:
    logging.error("%s", e)
    return 1
  print(f"\n{output_path}: {stats.embedded} sentences, {stats.tokens} "
        f"tokens, {stats.bad_lines} bad lines skipped, "
        f"{stats.sentences_per_second:.1f} sentences/s")
  return 0


if __name__ == "__main__":
  app.run(main)
