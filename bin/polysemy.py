"""Compares one word's vectors across sentences, layer by layer.

  python -m bin.polysemy --saved_model=savedmodels/peoples_daily_chars \\
      --word=包袱 --input=bench/polysemy/baofu.txt \\
      --senses=bench/polysemy/baofu.senses --output=runs/polysemy_baofu.png
  bazel run //bin:polysemy -- --saved_model=savedmodels/ptb --word=apple \\
      --input=bench/polysemy/apple.txt --lowercase --output=runs/apple.png

--input has one sentence per line (UTF-8; empty lines are skipped). Every
sentence must contain --word: a sentence without it is an error naming
file:line, as is a line that is not valid UTF-8. The sentences and the word
are tokenized with the SavedModel's own tokenizer (assets/elmo_tf.json); a
word of several tokens (包袱 in `chinese_chars` mode) is the mean of its
positions' vectors, and only its first occurrence in a sentence counts.

Prints, for layer 0 (`word_emb`, context-free: the same word always has
cosine 1.0) and each LSTM layer, the matrix of cosine similarities between
the word's vectors in the sentences (rows `L<line> <excerpt>`), and with
--output draws one heatmap per layer into a PNG (needs matplotlib, the
`plots` extra, and a CJK font for Chinese labels, e.g. the Debian package
fonts-wqy-microhei that tools/setup.sh installs). With --senses (one sense
label per line, on the line of the sentence it labels), also prints the mean
cosine within a sense and across senses. See elmo_tf/polysemy.py.
"""

from absl import app
from absl import flags
from absl import logging

from bin import flag_utils
from bin import inference_flags
from bin import thread_flags
from elmo_tf import polysemy

# --saved_model, --input, --output: shared with bin/embed and bin/score.
_SAVED_MODEL = inference_flags.SAVED_MODEL
_INPUT = inference_flags.INPUT  # Each sentence contains --word.
_OUTPUT = inference_flags.OUTPUT  # The heatmaps (PNG); none if unset.
_WORD = flags.DEFINE_string(
    "word", None, "The target word (may be several tokens).")
_SENSES = flags.DEFINE_string(
    "senses", None, "Optional file of sense labels, one per line, on the line "
    "number of the sentence it labels; prints the mean cosine within and "
    "across senses.")
_LOWERCASE = flags.DEFINE_bool(
    "lowercase", False, "Lower-case the sentences and --word before "
    "tokenizing (for models trained on lower-cased text, such as "
    "savedmodels/ptb). Excerpts show the original text.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  inference_flags.required(_SAVED_MODEL, _WORD, _INPUT)
  thread_flags.configure()
  saved_model = flag_utils.resolve_path(_SAVED_MODEL.value)
  input_path = flag_utils.resolve_path(_INPUT.value)
  try:
    sentences = polysemy.read_sentences(input_path)
    senses = (polysemy.read_senses(flag_utils.resolve_path(_SENSES.value),
                                   sentences) if _SENSES.value else None)
    result = polysemy.analyze(saved_model, _WORD.value, sentences,
                              lowercase=_LOWERCASE.value)
  except polysemy.PolysemyError as e:
    logging.error("%s", e)
    return 1
  print(polysemy.format_result(result, senses))
  if _OUTPUT.value:
    path = polysemy.plot_heatmaps(
        result, flag_utils.resolve_path(_OUTPUT.value), senses=senses)
    print(f"\nHeatmaps: {path}")
  return 0


if __name__ == "__main__":
  app.run(main)
