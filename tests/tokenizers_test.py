"""Tests for elmo_tf.tokenizers: modes, graph use, Python/TF agreement, jieba."""

import os
import sys
import tempfile
import unittest
from unittest import mock

import tensorflow as tf

from elmo_tf import tokenizers
from elmo_tf import vocab as vocab_lib

# Mixed sample used to check that every path gives the same tokens.
MIXED = [
    "Mr. Lei said Xiaomi … Apple iPhone",
    "她手里抱着一个小红包袱",
    "I ❤️ 北京 🍜!",
    "cafe\u0301 中\u0301文",
    "１２月ｉＰｈｏｎｅ发布，《人民日报》“你好”……",
    "GPT4 2018年 iPhone的\u3000新闻",
    "👨\u200d👩\u200d👧 family 🇨🇳🇺🇸 👍🏽",
    "\ufeff你好\u200b世界 a\u00a0b\tc\r\n",
    "",
    "   ",
]


def _decode(ragged: tf.RaggedTensor) -> list[list[str]]:
  return [[token.decode("utf-8") for token in row] for row in ragged.to_list()]


class WhitespaceTest(unittest.TestCase):

  def test_english_pretokenized(self):
    tokenizer = tokenizers.get_tokenizer("whitespace")
    self.assertEqual(tokenizer.mode, "whitespace")
    self.assertTrue(tokenizer.exportable)
    tokens = tokenizer.tokenize(
        tf.constant(["The cat  sat on the <unk> .", "\tIt 's N years\n", ""]))
    self.assertIsInstance(tokens, tf.RaggedTensor)
    self.assertEqual(_decode(tokens), [
        ["The", "cat", "sat", "on", "the", "<unk>", "."],
        ["It", "'s", "N", "years"],
        [],
    ])

  def test_unicode_whitespace_is_removed_completely(self):
    # tf_text.WhitespaceTokenizer 2.21 leaves bytes of U+3000 in the token.
    tokenizer = tokenizers.get_tokenizer("whitespace")
    self.assertEqual(
        tokenizer.tokenize_line("a\u3000b\u00a0c\u2003d\u2028e\u0085f\ufeffg"),
        ["a", "b", "c", "d", "e", "f", "g"])

  def test_combining_mark_and_emoji_stay_in_the_token(self):
    tokenizer = tokenizers.get_tokenizer("whitespace")
    self.assertEqual(tokenizer.tokenize_line("cafe\u0301 noir"),
                     ["cafe\u0301", "noir"])
    self.assertEqual(tokenizer.tokenize_line("I ❤️ 北京 🍜!"),
                     ["I", "❤️", "北京", "🍜!"])

  def test_segmented_chinese_keeps_words_whole(self):
    tokenizer = tokenizers.get_tokenizer("segmented")
    self.assertEqual(tokenizer.mode, "segmented")
    self.assertTrue(tokenizer.exportable)
    self.assertEqual(
        tokenizer.tokenize_line("中国 人民 银行\u3000发布 了  《 报告 》 １２月"),
        ["中国", "人民", "银行", "发布", "了", "《", "报告", "》", "１２月"])


class ChineseCharsTest(unittest.TestCase):

  def setUp(self):
    self.tokenizer = tokenizers.get_tokenizer("chinese_chars")

  def test_cases(self):
    cases = {
        "她手里抱着一个小红包袱":
            ["她", "手", "里", "抱", "着", "一", "个", "小", "红", "包", "袱"],
        "Mr. Lei said Xiaomi … Apple iPhone":
            ["Mr", ".", "Lei", "said", "Xiaomi", "…", "Apple", "iPhone"],
        "GPT4 2018年发布iPhone的":
            ["GPT4", "2018", "年", "发", "布", "iPhone", "的"],
        # Full-width CJK punctuation: one token per character.
        "，。《人民日报》“好”……！":
            ["，", "。", "《", "人", "民", "日", "报", "》", "“", "好", "”",
             "…", "…", "！"],
        # Full-width digits and letters stay full-width runs.
        "１２月ｉＰｈｏｎｅ上市":
            ["１２", "月", "ｉＰｈｏｎｅ", "上", "市"],
        "I ❤️ 北京 🍜!": ["I", "❤️", "北", "京", "🍜", "!"],
        # Combining marks stay on their base, also on a Han character.
        "cafe\u0301 中\u0301文": ["cafe\u0301", "中\u0301", "文"],
        # ZWJ family, flags, skin tone.
        "👨\u200d👩\u200d👧🇨🇳🇺🇸👍🏽":
            ["👨\u200d👩\u200d👧", "🇨🇳", "🇺🇸", "👍🏽"],
        # Extension B and compatibility ideographs.
        "𠀀𪚥豈": ["𠀀", "𪚥", "豈"],
        "don't 3.14": ["don", "'", "t", "3", ".", "14"],
        "\ufeff你好\u200b世界\u3000a\u00a0b\n": ["你", "好", "世", "界", "a", "b"],
        "": [],
        " \t ": [],
    }
    for line, expected in cases.items():
      self.assertEqual(self.tokenizer.tokenize_line(line), expected, line)

  def test_batch_tokenize_matches_lines(self):
    tokens = self.tokenizer.tokenize(tf.constant(["她买了iPhone。", "", "ok !"]))
    self.assertEqual(tokens.shape.rank, 2)
    self.assertEqual(_decode(tokens),
                     [["她", "买", "了", "iPhone", "。"], [], ["ok", "!"]])


class AgreementTest(unittest.TestCase):

  def test_tokenize_line_equals_tokenize_in_every_mode(self):
    for mode in tokenizers.MODES:
      tokenizer = tokenizers.get_tokenizer(mode)
      from_graph = _decode(tokenizer.tokenize(tf.constant(MIXED)))
      self.assertEqual([tokenizer.tokenize_line(line) for line in MIXED],
                       from_graph, mode)
      # Chunks smaller than the input give the same result.
      self.assertEqual(tokenizer.tokenize_lines(MIXED, chunk_size=3),
                       from_graph, mode)
      self.assertEqual(tokenizer.tokenize_lines([]), [], mode)

  def test_tokenize_inside_tf_function_and_tf_data(self):
    for mode in ("whitespace", "segmented", "chinese_chars", "jieba"):
      tokenizer = tokenizers.get_tokenizer(mode)
      expected = tokenizer.tokenize_lines(MIXED)
      fn = tf.function(tokenizer.tokenize,
                       input_signature=[tf.TensorSpec([None], tf.string)])
      self.assertEqual(_decode(fn(tf.constant(MIXED))), expected, mode)
      dataset = tf.data.Dataset.from_tensor_slices(MIXED).batch(4).map(
          tokenizer.tokenize)
      from_data = [row for batch in dataset for row in _decode(batch)]
      self.assertEqual(from_data, expected, mode)


class ExportTest(unittest.TestCase):

  def test_saved_model_tokenizes_raw_strings(self):
    tokenizer = tokenizers.get_tokenizer("chinese_chars")
    module = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve(strings):
      tokens = tokenizer.tokenize(strings)  # (batch, (tokens))
      padded = tokens.to_tensor(default_value="")  # (batch, time)
      return {"char_ids": vocab_lib.char_ids(padded)}  # (batch, time, 50)

    module.serve = serve
    lines = ["她买了iPhone。", "I ❤️ 北京"]
    expected = serve(tf.constant(lines))["char_ids"].numpy()
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, "tokenizer_model")
      tf.saved_model.save(module, path,
                          signatures={"serving_default": module.serve})
      restored = tf.saved_model.load(path)
      got = restored.signatures["serving_default"](tf.constant(lines))
    self.assertEqual(got["char_ids"].shape, (2, 5, 50))
    self.assertTrue((got["char_ids"].numpy() == expected).all())
    self.assertEqual(list(expected[0, 1]),
                     list(vocab_lib.char_ids_numpy("买")))
    self.assertFalse(expected[1, 4].any())  # Padding position.


class JiebaTest(unittest.TestCase):

  def test_segments_and_is_not_exportable(self):
    tokenizer = tokenizers.get_tokenizer("jieba")
    self.assertEqual(tokenizer.mode, "jieba")
    self.assertFalse(tokenizer.exportable)
    self.assertTrue(tokenizers.get_tokenizer("chinese_chars").exportable)
    self.assertEqual(tokenizer.tokenize_line("她手里抱着一个小红包袱"),
                     ["她", "手里", "抱", "着", "一个", "小红", "包袱"])
    # Whitespace dropped; combining marks and emoji sequences glued back.
    self.assertEqual(tokenizer.tokenize_line("I ❤️ 北京\u3000cafe\u0301"),
                     ["I", "❤️", "北京", "cafe\u0301"])

  def test_missing_jieba_explains_what_to_do(self):
    with mock.patch.dict(sys.modules, {"jieba": None}):
      with self.assertRaisesRegex(ImportError, r"pip install jieba==0\.42\.1"):
        tokenizers.get_tokenizer("jieba")
      try:
        tokenizers.get_tokenizer("jieba")
      except ImportError as e:
        self.assertIn("chinese_chars", str(e))


class ModeTest(unittest.TestCase):

  def test_unknown_mode_lists_valid_modes(self):
    with self.assertRaises(ValueError) as context:
      tokenizers.get_tokenizer("bpe")
    message = str(context.exception)
    self.assertIn("'bpe'", message)
    for mode in tokenizers.MODES:
      self.assertIn(mode, message)


if __name__ == "__main__":
  unittest.main()
