"""Both signatures of an exported model on a few hundred fuzzed strings (see
tests/signature_fuzz.py; bench/fuzz_signatures.py runs 10,000 in
`make bench`)."""

import os
import shutil
import tempfile
import unittest

import tensorflow as tf

from elmo_tf import export as export_lib
from elmo_tf import tokenizers as tokenizers_lib
from tests import export_testutil
from tests import signature_fuzz

CASES = int(os.environ.get("ELMO_TF_SIGNATURE_FUZZ_CASES", "300"))


class SignatureFuzzTest(unittest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    model_dir = export_testutil.train_tiny_model(cls.tmp)
    cls.exports = {}
    for mode in ("whitespace", "chinese_chars"):
      cls.exports[mode] = export_lib.export_saved_model(
          model_dir, os.path.join(cls.tmp, mode),
          export_lib.config_lib.ExportConfig(tokenization=mode))

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def test_signatures_on_fuzzed_text(self):
    strings = signature_fuzz.fuzz_cases(CASES, seed=7)
    self.assertGreaterEqual(len(strings), CASES)
    for mode, path in self.exports.items():
      with self.subTest(mode=mode):
        report = signature_fuzz.check_signatures(
            tf.saved_model.load(path), tokenizers_lib.get_tokenizer(mode),
            strings)
        self.assertEqual(report["strings"], len(strings))


if __name__ == "__main__":
  unittest.main()
