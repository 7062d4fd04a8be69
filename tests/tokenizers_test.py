"""Tests for elmo_tf.tokenizers: modes, graph use, Python/TF agreement, jieba.

The exportable modes run on core TensorFlow ops. `reference_tokenize` keeps
the tensorflow-text implementation they replaced (elmo_tf up to commit
de1b930), and the tests check that both give the same tokens on named
scripts and on a seeded fuzz corpus over all Unicode planes. The fuzz corpus
has `ELMO_TF_TOKENIZER_FUZZ_CASES` strings (default 300); `python -m
bench.fuzz_tokenizers` runs 10,000 and times both implementations.
"""

import importlib.util
import os
import random
import sys
import tempfile
import unicodedata
import unittest
from unittest import mock

import numpy as np
import tensorflow as tf

from elmo_tf import tokenizers
from elmo_tf import vocab as vocab_lib

EXPORTABLE_MODES = ("whitespace", "segmented", "chinese_chars")
FUZZ_CASES = int(os.environ.get("ELMO_TF_TOKENIZER_FUZZ_CASES", "300"))
HAVE_TF_TEXT = importlib.util.find_spec("tensorflow_text") is not None

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

# Named samples of what a corpus or a SavedModel caller may send.
SCRIPTS = {
    "english": [
        "The cat sat on the mat .",
        "Mr. O'Neil's  \"quote\" -- 3.14 , $ 1,000 ! <unk> N",
        "\tIt 's N years\n",
    ],
    "chinese": [
        "她手里抱着一个小红包袱",
        "中国 人民 银行\u3000发布 了  《 报告 》 １２月",
        "１２月３１日，新华社记者兰红光摄。（完）",
        "𠀀𪚥豈〇々⺀⼀\U00030000\U00031350\U0002ebf0",
    ],
    "mixed": MIXED,
    "emoji": [
        "👨\u200d👩\u200d👧\u200d👦 family",
        "👍🏽👍🏿 ok 👍 🏽",
        "🇨🇳🇺🇸🇯🇵 🇺 🇨🇳🇺",
        "🏳️\u200d🌈 🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074"
        "\U000e007f",
        "1️⃣ #️⃣ ❤️\u200d🔥 ☺︎",
        "\u200d🍜 a\u200d b\u200d",
    ],
    "combining": [
        "cafe\u0301 e\u0301\u0302\u0303",
        "\u0301 leading mark \u0301",
        "中\u0301文 ก\u0e31บ क्षत्रिय Z\u0324\u0308 \u20dd",
        "Ａ\u0301１\u0301",
    ],
    "rtl": [
        "שלום עולם",
        "مرحبا بالعالم العَرَبِيَّة",
        "\u200fمرحبا\u200e abc \u202eRLO\u202c",
        "abc ١٢٣ ۴۵۶ ١٢٣abc",
    ],
    "zero_width": [
        "a\u200bb a\u200cb a\u200db",
        "a\u2060b a\u180eb \ufeffBOM\ufeff",
        "\u200b\u200b\ufeff",
    ],
    "controls": [
        "".join(chr(c) for c in range(32)) + "x\x7f",
        "a\x7fb\x80c\x85d\x9fe\x1cf\x1fg\x0bh\x0ci",
        "\x01\x02word\x03",
    ],
    "spaces": [
        "a\u3000b\u00a0c\u2000d\u200ae",
        "a\u202fb\u205fc\u1680d\u2028e\u2029f",
        "\u3000\u3000",
        "１２\u3000月 ｉＰｈｏｎｅ\u00a0发布",
    ],
    "nul": [
        "the\0cat sat",
        "the\x00market fell",
        "\0",
        "\0\0a\0\0",
        "中\0文 🍜\0!",
        "a\0\u0301 b\u200d\0c",
    ],
}
NAMED = [line for lines in SCRIPTS.values() for line in lines]

# --- Seeded fuzz corpus over all Unicode planes ---
# Characters the tokenizers treat specially, drawn more often than uniform
# code points would be.
_SEPARATORS = ([0, 0, 0, 9, 10, 13, 32, 32, 32, 0x1c, 0x7f, 0x85, 0x9f, 0xa0,
                0x1680, 0x2000, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f,
                0x3000, 0x200b, 0xfeff] + list(range(1, 32)))
_EXTENDERS = [0x0300, 0x0301, 0x0489, 0x0903, 0x0e31, 0x20dd, 0x20e3, 0xfe0e,
              0xfe0f, 0x200c, 0x200d, 0x200d, 0x1f3fb, 0x1f3fd, 0x1f3ff,
              0xe0020, 0xe0067, 0xe007f, 0xe0100, 0x1f1e6, 0x1f1e8, 0x1f1f3,
              0x1f1ff]
_OTHERS = [0x2060, 0x180e, 0x200e, 0x200f, 0x202e, 0x00ad, 0xfffd, 0xfffe,
           0xffff, 0x10ffff, 0xe000, 0xf0000, 0x1f468, 0x1f469, 0x1f467,
           0x2764, 0x1f44d, 0x1f35c, 0x2026, 0x3002, 0xff0c, 0x300a, 0x201c,
           0x3007, 0x3005, 0x2e80, 0x2f00, 0xf900, 0x2f800, 0xff10, 0xff41,
           0x0660, 0x0966, 0x05d0, 0x0627, 0xac00, 0x3042, 0x30a2, 0x0416]
# (first, last) code point ranges of letters, digits and Han ideographs.
_RANGES = [(0x21, 0x7e), (0x21, 0x7e), (0x4e00, 0x9fff), (0x3400, 0x4dbf),
           (0x20000, 0x2a6df), (0x30000, 0x3134f), (0x31350, 0x323af),
           (0x2ebf0, 0x2ee5f), (0xac00, 0xd7a3), (0x0400, 0x04ff),
           (0x0590, 0x06ff), (0x3040, 0x30ff), (0xff00, 0xffef),
           (0x1f300, 0x1faff)]


def _random_code_point(rng: random.Random) -> int:
  roll = rng.random()
  if roll < 0.2:
    return rng.choice(_SEPARATORS)
  if roll < 0.35:
    return rng.choice(_EXTENDERS)
  if roll < 0.45:
    return rng.choice(_OTHERS)
  if roll < 0.8:
    first, last = rng.choice(_RANGES)
    return rng.randint(first, last)
  while True:  # Any plane, assigned or not; surrogates cannot be encoded.
    code = rng.randrange(17) * 0x10000 + rng.randrange(0x10000)
    if not 0xd800 <= code <= 0xdfff:
      return code


def fuzz_strings(n: int, seed: int = 0) -> list[str]:
  """`n` random strings of 0..24 code points (about 1 in 4 holds a NUL)."""
  rng = random.Random(seed)
  return ["".join(chr(_random_code_point(rng))
                  for _ in range(rng.randint(0, 24))) for _ in range(n)]


def fuzz_bytes(n: int, seed: int = 0) -> list[bytes]:
  """`n` random byte strings: UTF-8 pieces cut anywhere, stray bytes, NULs."""
  rng = random.Random(seed)
  pieces = [s.encode("utf-8") for s in fuzz_strings(200, seed + 1)]
  result = []
  for _ in range(n):
    data = b""
    for _ in range(rng.randint(0, 4)):
      piece = rng.choice(pieces)
      if rng.random() < 0.3:
        piece = piece[rng.randint(0, len(piece)):]  # Maybe mid-character.
      data += piece
      data += bytes(rng.choice([0, 0x20, 0x80, 0xbf, 0xc0, 0xe3, 0xf0, 0xff])
                    for _ in range(rng.randint(0, 2)))
    result.append(data)
  return result


# --- The tensorflow-text implementation (elmo_tf <= de1b930), as reference ---
_REF_SEPARATOR_CLASS = r"\p{Cc}\p{Z}\x{200B}\x{FEFF}"
_REF_SEPARATORS = "[" + _REF_SEPARATOR_CLASS + "]+"
_REF_EXTEND = (r"(?:\x{200D}[^" + _REF_SEPARATOR_CLASS + r"]"
               r"|[\p{M}\x{200C}\x{200D}\x{1F3FB}-\x{1F3FF}"
               r"\x{E0020}-\x{E007F}])")
_REF_WORD_CHAR = r"(?:[^\P{L}\p{Han}]|\p{Nd})"
_REF_CHINESE_CHARS_TOKEN = (
    r"\p{Han}" + _REF_EXTEND + "*"
    + "|(?:" + _REF_WORD_CHAR + _REF_EXTEND + "*)+"
    + r"|[\x{1F1E6}-\x{1F1FF}]{2}" + _REF_EXTEND + "*"
    + "|[^" + _REF_SEPARATOR_CLASS + "]" + _REF_EXTEND + "*")


def reference_tokenize(strings, mode: str,
                       nul_as_space: bool = True) -> tf.RaggedTensor:
  """The tensorflow-text tokenizer that the core-op one replaced.

  Its kernel reads inputs as C strings (everything after a NUL was lost), so
  with `nul_as_space` NULs become spaces first: the rule both
  implementations now follow. False runs exactly the old code (for timing).
  """
  import tensorflow_text as tf_text  # pylint: disable=g-import-not-at-top
  strings = tf.convert_to_tensor(strings, dtype=tf.string)  # (batch,)
  if nul_as_space:
    strings = tf.strings.regex_replace(strings, r"\x00", " ")
  if mode == "chinese_chars":
    strings = tf.strings.regex_replace(strings, _REF_CHINESE_CHARS_TOKEN,
                                       " \\0 ")
  return tf_text.regex_split(strings, _REF_SEPARATORS)


def _is_separator(char: str) -> bool:
  return (unicodedata.category(char) in ("Cc", "Zs", "Zl", "Zp")
          or char in "\u200b\ufeff")


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

  def test_zero_width_and_format_characters(self):
    # U+200B separates; ZWNJ, ZWJ, word joiner and bidi marks (Cf) do not.
    tokenizer = tokenizers.get_tokenizer("whitespace")
    self.assertEqual(tokenizer.tokenize_line("a\u200bb a\u200cb a\u200db"),
                     ["a", "b", "a\u200cb", "a\u200db"])
    self.assertEqual(
        tokenizer.tokenize_line("a\u2060b \u200fمرحبا\u200e abc"),
        ["a\u2060b", "\u200fمرحبا\u200e", "abc"])

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
        # Flags pair regional indicators from the left; a lone one stands.
        "🇨🇳🇺🇸🇯🇵 🇺 🇨🇳🇺": ["🇨🇳", "🇺🇸", "🇯🇵", "🇺", "🇨🇳", "🇺"],
        "🏳️\u200d🌈 1️⃣ #️⃣": ["🏳️\u200d🌈", "1️⃣", "#️⃣"],
        # Right-to-left scripts and other decimal digits are runs.
        "שלום עולם العَرَبِيَّة": ["שלום", "עולם", "العَرَبِيَّة"],
        "abc ١٢٣ ۴۵۶ ١٢٣abc": ["abc", "١٢٣", "۴۵۶", "١٢٣abc"],
        # A mark with no base stands alone; controls (NUL too) separate.
        "\u0301 leading": ["\u0301", "leading"],
        "a\x01b\x7fc\x9fd\0e": ["a", "b", "c", "d", "e"],
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

  def test_tokenize_uses_core_ops_only(self):
    # tensorflow-text's ops are not in tf.raw_ops; a SavedModel using them
    # fails to load without `import tensorflow_text`.
    for mode in EXPORTABLE_MODES:
      fn = tf.function(tokenizers.get_tokenizer(mode).tokenize,
                       input_signature=[tf.TensorSpec([None], tf.string)])
      graph = fn.get_concrete_function().graph.as_graph_def()
      op_types = {node.op for node in graph.node}
      self.assertIn("StaticRegexReplace", op_types)  # Pattern compiled once.
      self.assertIn("StringSplitV2", op_types)
      self.assertEqual(
          [op for op in op_types if not hasattr(tf.raw_ops, op)], [], mode)
      self.assertEqual(list(graph.library.function), [], mode)

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


@unittest.skipUnless(HAVE_TF_TEXT, "tensorflow-text (the reference) missing")
class ReferenceTest(unittest.TestCase):
  """Core ops give the tokens the tensorflow-text implementation gave."""

  def _check(self, strings, mode, what):
    tokenizer = tokenizers.get_tokenizer(mode)
    strings = tf.constant(strings, dtype=tf.string)
    got = tokenizer.tokenize(strings)
    expected = reference_tokenize(strings, mode)
    self.assertEqual(got.row_splits.dtype, tf.int64)
    for index, (row, want) in enumerate(zip(got.to_list(),
                                            expected.to_list())):
      self.assertEqual(row, want, f"{mode}, {what} {index}: "
                       f"{strings[index].numpy()!r}")

  def test_named_scripts(self):
    for mode in EXPORTABLE_MODES:
      for name, lines in SCRIPTS.items():
        self._check(lines, mode, name)

  def test_fuzz_corpus(self):
    strings = fuzz_strings(FUZZ_CASES, seed=1)
    self.assertGreater(sum("\0" in s for s in strings), FUZZ_CASES // 10)
    for mode in EXPORTABLE_MODES:
      self._check(strings, mode, "fuzz")

  def test_bytes_that_are_not_utf8(self):
    # Only a SavedModel caller can send them; they stay inside tokens.
    for mode in EXPORTABLE_MODES:
      self._check(fuzz_bytes(FUZZ_CASES, seed=2), mode, "bytes")


class TrainingAndGraphAgreementTest(unittest.TestCase):
  """What prepare.py writes (tokenize_lines) is what a SavedModel sees."""

  def test_every_mode_on_named_scripts_and_fuzz(self):
    strings = NAMED + fuzz_strings(FUZZ_CASES, seed=3)
    for mode in tokenizers.MODES:
      tokenizer = tokenizers.get_tokenizer(mode)
      in_graph = _decode(tokenizer.tokenize(tf.constant(strings)))
      lines = tokenizer.tokenize_lines(strings, chunk_size=97)
      self.assertEqual(len(lines), len(strings))
      for index, line in enumerate(strings):
        self.assertEqual(lines[index], in_graph[index],
                         f"{mode}, string {index}: {line!r}")
        self.assertEqual(tokenizer.tokenize_line(line), in_graph[index],
                         f"{mode}, string {index}: {line!r}")
        for token in in_graph[index]:
          self.assertTrue(token, f"{mode}: empty token in {line!r}")
          self.assertFalse([c for c in token if _is_separator(c)],
                           f"{mode}: separator in {token!r} of {line!r}")

  def test_nul_separates_tokens_in_every_mode(self):
    for mode in tokenizers.MODES:
      tokenizer = tokenizers.get_tokenizer(mode)
      self.assertEqual(tokenizer.tokenize_line("the\0cat sat"),
                       ["the", "cat", "sat"], mode)
      self.assertEqual(
          _decode(tokenizer.tokenize(tf.constant(["the\x00market fell",
                                                  "\0\0", "a\0"]))),
          [["the", "market", "fell"], [], ["a"]], mode)
    self.assertEqual(
        tokenizers.get_tokenizer("chinese_chars").tokenize_line("中\0文 🍜\0!"),
        ["中", "文", "🍜", "!"])

  def test_every_control_character_separates_tokens(self):
    controls = [chr(c) for c in list(range(0x20)) + list(range(0x7f, 0xa0))]
    line = "x".join(controls)
    for mode in tokenizers.MODES:
      self.assertEqual(tokenizers.get_tokenizer(mode).tokenize_line(line),
                       ["x"] * (len(controls) - 1), mode)


class CharIdsOfUnusualTokensTest(unittest.TestCase):

  def test_char_ids_match_the_python_reference(self):
    strings = NAMED + fuzz_strings(FUZZ_CASES, seed=4)
    for mode in EXPORTABLE_MODES:
      tokens = [token for line in
                tokenizers.get_tokenizer(mode).tokenize_lines(strings)
                for token in line]
      tokens.append("\U0010ffff" * 13 + "\u0301")  # Cut inside a character.
      ids = vocab_lib.char_ids(tf.constant(tokens)).numpy()  # (n, 50)
      expected = np.stack([vocab_lib.char_ids_numpy(t) for t in tokens])
      np.testing.assert_array_equal(ids, expected, mode)
      # No token holds a NUL byte (id 1), nor ASCII whitespace (ids 10, 11,
      # 12, 13, 14, 33: bytes 9..13 and 32, plus one).
      self.assertFalse(np.isin(ids, [1, 10, 11, 12, 13, 14, 33]).any(), mode)

  def test_char_ids_of_raw_bytes(self):
    # What a SavedModel caller may send: tokens of invalid UTF-8 keep their
    # bytes (at most 48) as ids.
    tokens = [t for row in tokenizers.get_tokenizer("chinese_chars").tokenize(
        tf.constant(fuzz_bytes(50, seed=5))).to_list() for t in row]
    ids = vocab_lib.char_ids(tf.constant(tokens)).numpy()
    for token, row in zip(tokens, ids):
      self.assertNotIn(0, token)
      data = list(token[:vocab_lib.MAX_BYTES_PER_TOKEN])
      self.assertEqual(list(row[:len(data) + 2]),
                       [vocab_lib.BOW_CHAR] + [b + 1 for b in data]
                       + [vocab_lib.EOW_CHAR], token)


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
