r"""Prepares a corpus: tokenized shards, vocabulary and manifest.

Usage (from the repository root):

  .venv/bin/python -m bin.prepare_corpus --corpus=ptb --out=/data/ptb
  .venv/bin/python -m bin.prepare_corpus --corpus=peoples_daily \
      --out=/data/pd --min_count=2
  .venv/bin/python -m bin.prepare_corpus \
      --corpus='text/shard-*.txt' --tokenization=chinese_chars --out=/data/zh
  .venv/bin/python -m bin.prepare_corpus \
      --corpus='train=a/*.txt;valid=b/dev.txt;test=b/test.txt' --out=/data/x
  .venv/bin/python -m bin.prepare_corpus --corpus=reviews.txt \
      --vocab_file=savedmodels/ptb/assets/vocab.txt --out=/data/reviews

The output directory is what `--corpus` of training and evaluation accepts.
See elmo_tf/corpora.py for corpus names and held-out rules, and
elmo_tf/prepare.py for what is written.
"""

import os

from absl import app
from absl import flags
from absl import logging

from bin import flag_utils

from elmo_tf import config as config_lib
from elmo_tf import corpora
from elmo_tf import prepare

_DEFAULTS = config_lib.DataConfig()

_CORPUS = flags.DEFINE_string(
    "corpus", None,
    "ptb | peoples_daily | comma-separated files/globs (one sentence per "
    "line) | 'train=GLOBS;valid=GLOBS;test=GLOBS'.")
_TOKENIZATION = flags.DEFINE_enum(
    "tokenization", None, list(config_lib.TOKENIZATIONS),
    "Tokenization mode. Default: segmented for peoples_daily, else "
    f"{_DEFAULTS.tokenization}.")
_OUT = flag_utils.OUT  # --out: output directory (must not exist).
_MIN_COUNT = flags.DEFINE_integer(
    "min_count", _DEFAULTS.min_count,
    "Leave words seen fewer times in train out of the vocabulary.")
_MAX_VOCAB = flags.DEFINE_integer(
    "max_vocab", _DEFAULTS.max_vocab,
    "Largest vocabulary size, the 3 specials included; 0: no limit.")
_ON_BAD_LINE = flags.DEFINE_enum(
    "on_bad_line", _DEFAULTS.on_bad_line, list(config_lib.ON_BAD_LINE_CHOICES),
    "What to do with a line that is not valid UTF-8.")
_LINES_PER_SHARD = flags.DEFINE_integer(
    "lines_per_shard", _DEFAULTS.lines_per_shard, "Sentences per output shard.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False,
                               "Replace --out if it exists.")
_VOCAB_FILE = flag_utils.VOCAB_FILE  # --vocab_file: a fixed vocabulary.

flags.mark_flags_as_required(["corpus", "out"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # Relative paths mean the user's directory, also under `bazel run`.
  corpus = flag_utils.resolve_corpus(_CORPUS.value)
  out = flag_utils.resolve_path(os.path.expanduser(_OUT.value))
  tokenization = _TOKENIZATION.value or prepare.default_tokenization(corpus)
  try:
    prepared = prepare.prepare_corpus(
        corpus, tokenization, out, min_count=_MIN_COUNT.value,
        max_vocab=_MAX_VOCAB.value, on_bad_line=_ON_BAD_LINE.value,
        lines_per_shard=_LINES_PER_SHARD.value, overwrite=_OVERWRITE.value,
        vocab_file=flag_utils.resolve_path(_VOCAB_FILE.value or ""))
  except (corpora.CorpusError, prepare.PreparedCorpusError) as e:
    logging.error("%s", e)
    return 1
  logging.info("\n%s", prepare.summary(prepared))
  return 0


if __name__ == "__main__":
  app.run(main)
