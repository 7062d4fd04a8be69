"""Scores sentences with the biLM: log-probability and perplexity per line.

  python -m bin.score --saved_model=savedmodels/peoples_daily_chars \
      --input=candidates.txt --rank
  python -m bin.score --model_dir=runs/ptb_cpu_small --input=sentences.txt
  bazel run //bin:score -- --saved_model=savedmodels/peoples_daily_chars \
      --input=candidates.txt --rank

Prints one JSON object per non-empty input line (`text`, `tokens`,
`forward_log_prob`, `backward_log_prob`, `average_log_prob`, `token_count`,
`perplexity`, `forward_perplexity`, `backward_perplexity`, `n_unk`; see
elmo_tf/score.py); with --rank, ordered from the most fluent (lowest
perplexity) to the least, each with its `rank`. --output writes the same
lines to a file instead. Unknown words are scored as <UNK> and counted in
`n_unk`.
"""

import json
import sys

from absl import app
from absl import flags
from absl import logging

from bin import flag_utils
from bin import inference_flags
from bin import thread_flags
from elmo_tf import text_io

_RANK = flags.DEFINE_bool(
    "rank", False, "Order the sentences from the most to the least fluent "
    "(lowest perplexity first) and add their rank.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  inference_flags.required(inference_flags.INPUT)
  thread_flags.configure()
  path = inference_flags.model_path()
  input_path = flag_utils.resolve_path(inference_flags.INPUT.value)
  from elmo_tf import export as export_lib  # Late: TensorFlow start-up.
  from elmo_tf import score as score_lib
  try:
    text_io.check_input(input_path)
    module, _, _ = export_lib.load(path)
    score_lib.check_can_score(module, path)
    results = []
    for chunk in text_io.read_sentences(
        input_path, on_bad_line=inference_flags.ON_BAD_LINE.value,
        chunk_size=inference_flags.BATCH_SIZE.value):
      texts = [text for _, text in chunk if text.strip()]
      results.extend(score_lib.score_sentences(module, texts))
  except (text_io.InputError, score_lib.ScoringError, ValueError) as e:
    logging.error("%s", e)
    return 1
  if _RANK.value:
    results = score_lib.rank(results)
  lines = [json.dumps(r, ensure_ascii=False) for r in results]
  if inference_flags.OUTPUT.value:
    output = flag_utils.resolve_path(inference_flags.OUTPUT.value)
    try:
      with text_io.atomic_output(
          output, overwrite=inference_flags.OVERWRITE.value) as partial:
        with open(partial, "w", encoding="utf-8") as f:
          f.write("".join(line + "\n" for line in lines))
    except text_io.InputError as e:
      logging.error("%s", e)
      return 1
  else:
    sys.stdout.write("".join(line + "\n" for line in lines))
  return 0


if __name__ == "__main__":
  app.run(main)
