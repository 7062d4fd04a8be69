"""Fuzzing the SavedModel's signatures: text -> tokens -> char ids -> vectors.

`check_signatures(module, tokenizer, strings)` feeds fuzzed strings (every
Unicode plane, ZWJ sequences, controls, NUL, invalid UTF-8) to both
signatures of an exported model and checks, for every string:
  * no crash, and every float output finite;
  * `sequence_len` equals the number of tokens the TRAINING tokenizer gives
    (`Tokenizer.tokenize_line`, what corpus preparation uses): training and
    export tokenize alike;
  * `mask` has `sequence_len` True values, and every output is zero past them;
  * the `tokens` signature, fed the training tokenizer's tokens, gives the
    same vectors as `default` on the raw string.
Used by tests/signature_fuzz_test.py (a few hundred cases, `make test`) and
bench/fuzz_signatures.py (10,000 cases, `make bench`).
"""

import numpy as np
import tensorflow as tf

from tests import tokenizers_test

FLOAT_KEYS = ("word_emb", "lstm_outputs1", "elmo", "default")


def fuzz_cases(n: int, seed: int) -> list[str]:
  """`n` strings: the named samples, fuzzed text and decoded invalid bytes."""
  strings = list(tokenizers_test.NAMED) + tokenizers_test.fuzz_strings(
      n, seed)
  strings += [b.decode("utf-8", "replace")
              for b in tokenizers_test.fuzz_bytes(max(1, n // 10), seed + 1)]
  return strings[:max(n, 1)]


def check_signatures(module, tokenizer, strings: list[str],
                     batch_size: int = 16, atol: float = 1e-4) -> dict:
  """Runs the checks above; returns counts. Raises AssertionError naming
  the failing string."""
  default = module.signatures["default"]
  tokens_signature = module.signatures["tokens"]
  checked = 0
  for start in range(0, len(strings), batch_size):
    batch = strings[start:start + batch_size]
    out = {k: v.numpy() for k, v in default(tf.constant(batch)).items()}
    token_lists = [tokenizer.tokenize_line(s) for s in batch]
    width = max([len(t) for t in token_lists] + [1])
    padded = [t + [""] * (width - len(t)) for t in token_lists]
    by_tokens = {k: v.numpy() for k, v in tokens_signature(
        tokens=tf.constant(padded, tf.string, shape=[len(batch), width]),
        sequence_len=tf.constant([len(t) for t in token_lists],
                                 tf.int32)).items()}
    for i, text in enumerate(batch):
      n = len(token_lists[i])
      where = f"string {start + i}: {text!r}"
      assert int(out["sequence_len"][i]) == n, (
          f"{where}: sequence_len {out['sequence_len'][i]}, the training "
          f"tokenizer gives {n} tokens {token_lists[i]}")
      assert int(out["mask"][i].sum()) == n, where
      for key in FLOAT_KEYS:
        value = out[key][i]
        assert np.all(np.isfinite(value)), f"{where}: non-finite {key}"
        if key != "default":
          assert not np.any(value[n:]), f"{where}: {key} not zero past n"
          np.testing.assert_allclose(by_tokens[key][i][:n], value[:n],
                                     atol=atol, err_msg=f"{where}: {key}")
        else:
          np.testing.assert_allclose(by_tokens[key][i], value, atol=atol,
                                     err_msg=f"{where}: {key}")
      checked += 1
  return {"strings": checked, "crashes": 0}
