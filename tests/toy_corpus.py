"""A small built-in text for training tests: a toy grammar with structure.

The sentences follow fixed templates, so a language model that learns the
templates beats the unigram entropy of the text by a wide margin.
"""

import math
import os
import random
from collections import Counter

_SUBJECTS = ["the cat", "a dog", "the old man", "my sister", "the bird",
             "a child"]
_VERBS = ["sees", "likes", "follows", "finds", "hears"]
_OBJECTS = ["the ball", "a red box", "the green tree", "her friend",
            "the small house"]
_PLACES = ["in the park", "at home", "by the river", "near the school"]


def sentences(n: int, seed: int = 0) -> list[str]:
  rng = random.Random(seed)
  out = []
  for _ in range(n):
    words = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)]
    if rng.random() < 0.5:
      words.append(rng.choice(_PLACES))
    out.append(" ".join(words) + " .")
  return out


def write_corpus(directory: str, n_train: int = 600, n_heldout: int = 60,
                 seed: int = 0) -> dict[str, str]:
  """Writes train/valid/test files; returns {split: path} and the spec."""
  os.makedirs(directory, exist_ok=True)
  paths = {}
  for i, (split, n) in enumerate(
      [("train", n_train), ("valid", n_heldout), ("test", n_heldout)]):
    path = os.path.join(directory, f"{split}.txt")
    with open(path, "w", encoding="utf-8") as f:
      f.write("\n".join(sentences(n, seed=seed + i)) + "\n")
    paths[split] = path
  paths["spec"] = ";".join(f"{s}={paths[s]}" for s in ("train", "valid", "test"))
  return paths


def unigram_entropy(path: str) -> float:
  """Entropy (nats) of the unigram distribution of words plus </S>."""
  counts = Counter()
  with open(path, encoding="utf-8") as f:
    for line in f:
      tokens = line.split()
      if tokens:
        counts.update(tokens + ["</S>"])
  total = sum(counts.values())
  return -sum(c / total * math.log(c / total) for c in counts.values())
