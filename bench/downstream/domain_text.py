r"""Writes a sentence task's unlabelled training text, to fine-tune a biLM on
the task's domain before using it for the task (the paper's section 5):

  .venv/bin/python -m bench.downstream.domain_text \
      --domain_task=en_movie_polarity --domain_out_dir=/tmp/reviews
  .venv/bin/python -m bin.train --init_from=savedmodels/ptb \
      --corpus="$(cat /tmp/reviews/corpus_spec.txt)" --model_dir=runs/ptb_reviews

The split is the one bench.downstream.run makes with the same --max_dev,
--max_test and --data_seed (its defaults here): train.txt holds every text
left for training (not only the --max_train subsample the classifier
sees), valid.txt the dev texts; test texts are never written.
"""

import os

from absl import app
from absl import flags

_TASK = flags.DEFINE_enum("domain_task", "en_movie_polarity",
                          ["en_movie_polarity", "zh_review_sentiment"],
                          "A sentence task of bench/downstream.")
_OUT_DIR = flags.DEFINE_string("domain_out_dir", None, "Where to write train.txt, "
                               "valid.txt and corpus_spec.txt.")
_DEV = flags.DEFINE_integer("domain_max_dev", 500,
                            "As bench.downstream.run --max_dev.")
_TEST = flags.DEFINE_integer("domain_max_test", 1000,
                             "As bench.downstream.run --max_test.")
_SEED = flags.DEFINE_integer("domain_data_seed", 0,
                             "As bench.downstream.run --data_seed.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _OUT_DIR.value:
    raise app.UsageError("--domain_out_dir is required.")
  from bench.downstream import tasks  # pylint: disable=g-import-not-at-top
  task = tasks.load_task(_TASK.value, max_train=0, max_dev=_DEV.value,
                         max_test=_TEST.value, max_tokens=10**6,
                         seed=_SEED.value)
  out_dir = os.path.abspath(_OUT_DIR.value)
  spec = tasks.write_domain_text(task, out_dir)
  tasks.write_lines(os.path.join(out_dir, "corpus_spec.txt"), [spec])
  print(f"{len(task.unlabelled_train)} training and {len(task.dev)} dev "
        f"texts of {task.name} in {out_dir}\n--corpus='{spec}'")


if __name__ == "__main__":
  app.run(main)
