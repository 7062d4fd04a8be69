r"""Polysemy: how similar are one word's vectors in different sentences?

Given a target word and sentences that contain it, this module embeds every
sentence with an exported SavedModel (`elmo_tf.export`) and compares the
word's vectors across sentences, layer by layer:

  layer 0 (`word_emb`, width P)           context-free: the same word always
                                          gets the same vector (cosine 1.0)
  layer i (`lstm_outputs{i}`, width 2P)   i = 1..L, contextual

Steps, each a function below:

  1. `read_sentences(path)`: one sentence per line (UTF-8), empty lines
     skipped; an undecodable line is a `PolysemyError` naming `file:line`.
  2. `locate(sentences, word, tokenizer)`: tokenizes the sentences and the
     word with the model's own tokenizer (`assets/elmo_tf.json`'s
     `tokenization`) and finds the word as a sub-sequence of tokens. A word
     of several tokens (包袱 is two tokens in `chinese_chars` mode, `new york`
     two in `whitespace` mode) spans several positions. Only the FIRST
     occurrence in a sentence is used. A sentence without the word is a
     `PolysemyError` naming `file:line` (an error, not a warning: a silently
     dropped sentence would shift the rows of the matrices).
  3. `occurrence_vectors(signature, occurrences, n_layers)`: calls the
     SavedModel's `tokens` signature and takes, per layer, the MEAN of the
     vectors at the word's positions -> (N, width) per layer.
  4. `cosine_matrix(vectors)` -> (N, N), symmetric, 1.0 on the diagonal.
  5. `sense_separation(matrix, labels)`: mean cosine of pairs with the same
     sense label vs pairs with different labels.

Layer 0 is kept at its width P: AllenNLP duplicates it to [x; x] (2P) to mix
it with the LSTM layers, which leaves every cosine unchanged.

`analyze(saved_model, word, sentences)` runs steps 2-4;
`format_table` and `plot_heatmaps` present the result (the latter imports
matplotlib lazily, so importing this module does not need it).

Example:
```python
from elmo_tf import polysemy
sentences = polysemy.read_sentences("bench/polysemy/baofu.txt")
result = polysemy.analyze("savedmodels/peoples_daily_chars", "包袱", sentences)
result.matrices["lstm_outputs2"]  # (N, N) cosines of the top layer
```
"""

import dataclasses
import os
import unicodedata
from typing import NamedTuple, Sequence

from absl import logging
import numpy as np

from elmo_tf import text_files

# Sentences per call of the SavedModel.
BATCH_SIZE = 32
# Display width (terminal columns, a Han character counts 2) of the sentence
# excerpts labelling rows, and of the excerpts in the heatmap.
TABLE_EXCERPT_WIDTH = 28
PLOT_EXCERPT_WIDTH = 24
# Fonts with Chinese glyphs, in order of preference (family names as
# matplotlib's font_manager knows them). tools/setup.sh installs the first,
# from the Debian package fonts-wqy-microhei.
CJK_FONT_FAMILIES = (
    "WenQuanYi Micro Hei", "Noto Sans CJK SC", "Noto Sans CJK JP",
    "Source Han Sans SC", "WenQuanYi Zen Hei", "Droid Sans Fallback",
    "AR PL UMing CN", "SimHei", "Microsoft YaHei", "PingFang SC",
    "Heiti SC")
# Substrings of font file names worth registering with matplotlib when its
# font cache predates the font's installation.
_CJK_FONT_FILE_HINTS = ("wqy", "cjk", "sourcehan", "droidsansfallback",
                        "uming", "ukai", "simhei", "msyh", "pingfang")


class PolysemyError(ValueError):
  """A user error in the input: undecodable line, word not found, ..."""


@dataclasses.dataclass(frozen=True)
class Sentence:
  """One input sentence and where it comes from (`file:line`)."""
  source: str
  line_number: int
  text: str

  @property
  def location(self) -> str:
    return f"{self.source}:{self.line_number}"


@dataclasses.dataclass(frozen=True)
class Occurrence:
  """The first occurrence of the target word in a sentence.

  Attributes:
    sentence: the `Sentence`.
    tokens: the sentence's tokens (the model's tokenizer; lower-cased if
      asked).
    start: index in `tokens` of the word's first token.
    length: number of tokens of the word.
  """
  sentence: Sentence
  tokens: tuple[str, ...]
  start: int
  length: int


class SenseSeparation(NamedTuple):
  """Mean cosine over pairs of sentences with the same / different senses
  (NaN when there is no such pair), and the number of such pairs."""
  within: float
  across: float
  n_within: int
  n_across: int


@dataclasses.dataclass(frozen=True)
class PolysemyResult:
  """What `analyze` returns.

  Attributes:
    word: the target word as given.
    occurrences: one `Occurrence` per sentence, in input order.
    layers: layer names, layer 0 first (`word_emb`, `lstm_outputs1`, ...).
    vectors: {layer name: (N, width) float64}, the word's (mean) vector in
      each sentence.
    matrices: {layer name: (N, N) float64} cosine similarities.
  """
  word: str
  occurrences: list[Occurrence]
  layers: list[str]
  vectors: dict[str, np.ndarray]
  matrices: dict[str, np.ndarray]


# === Input ===


def read_sentences(path: str) -> list[Sentence]:
  """Non-empty lines of a UTF-8 file, one sentence each, with line numbers.

  Lines that are empty or whitespace only are skipped (their numbers are
  not reused, so `file:line` always points at the file).

  Raises:
    PolysemyError: for a missing file, a line that is not valid UTF-8
      (naming `file:line`), or a file without any sentence.
  """
  if not os.path.isfile(path):
    raise PolysemyError(f"{path}: no such file.")
  sentences = []
  for raw in text_files.read_lines(path):
    if raw.text is None:
      raise PolysemyError(f"{raw.location}: {raw.error}.")
    if raw.text.strip():
      sentences.append(Sentence(path, raw.line_number, raw.text.strip()))
  if not sentences:
    raise PolysemyError(f"{path}: no sentences (only empty lines).")
  return sentences


def read_senses(path: str, sentences: Sequence[Sentence]) -> list[str]:
  """Sense labels of `sentences` from a companion file.

  The file has one label per line, on the same line number as the sentence
  it labels (lines that are empty in the sentence file are ignored, so they
  may be empty here too).

  Raises:
    PolysemyError: for a missing or undecodable file, or a sentence whose
      line has no label.
  """
  if not os.path.isfile(path):
    raise PolysemyError(f"{path}: no such file.")
  labels = {}
  for raw in text_files.read_lines(path):
    if raw.text is None:
      raise PolysemyError(f"{raw.location}: {raw.error}.")
    labels[raw.line_number] = raw.text.strip()
  result = []
  for sentence in sentences:
    label = labels.get(sentence.line_number, "")
    if not label:
      raise PolysemyError(f"{path}:{sentence.line_number}: no sense label for "
                          f"{sentence.location}.")
    result.append(label)
  return result


# === Occurrences ===


def find_occurrence(tokens: Sequence[str], word_tokens: Sequence[str]) -> int:
  """Index of the first occurrence of `word_tokens` as a contiguous
  sub-sequence of `tokens`, or -1."""
  n = len(word_tokens)
  if n == 0:
    return -1
  for start in range(len(tokens) - n + 1):
    if list(tokens[start:start + n]) == list(word_tokens):
      return start
  return -1


def locate(sentences: Sequence[Sentence], word: str, tokenizer,
           lowercase: bool = False) -> list[Occurrence]:
  """The first occurrence of `word` in every sentence, in tokens.

  Args:
    sentences: `Sentence`s (see `read_sentences`).
    word: the target word; tokenized like the sentences, it may be several
      tokens.
    tokenizer: an `elmo_tf.tokenizers.Tokenizer` (the model's mode).
    lowercase: lower-case the sentences and the word before tokenizing (for
      a model trained on lower-cased text, such as PTB).

  Raises:
    PolysemyError: when the word has no token, or a sentence does not
      contain it (naming `file:line` and the sentence's tokens).
  """
  prepare = str.lower if lowercase else (lambda text: text)
  word_tokens = tokenizer.tokenize_lines([prepare(word)])[0]
  if not word_tokens:
    raise PolysemyError(f"The word {word!r} has no tokens.")
  all_tokens = tokenizer.tokenize_lines(
      [prepare(sentence.text) for sentence in sentences])
  occurrences = []
  for sentence, tokens in zip(sentences, all_tokens):
    start = find_occurrence(tokens, word_tokens)
    if start < 0:
      shown = " ".join(tokens) if len(tokens) <= 40 else (
          " ".join(tokens[:40]) + " ...")
      raise PolysemyError(
          f"{sentence.location}: the sentence does not contain {word!r} "
          f"(tokens {word_tokens}; mode {tokenizer.mode!r}"
          f"{', lower-cased' if lowercase else ''}). Its tokens: {shown}")
    occurrences.append(Occurrence(sentence, tuple(tokens), start,
                                  len(word_tokens)))
  logging.info("Found %r (%d token(s)) in %d sentences.", word,
               len(word_tokens), len(occurrences))
  return occurrences


# === Vectors and cosines ===


def layer_names(n_layers: int) -> list[str]:
  """`word_emb` (layer 0) then `lstm_outputs1` .. `lstm_outputs{n_layers}`."""
  return ["word_emb"] + [f"lstm_outputs{i}" for i in range(1, n_layers + 1)]


def layer_title(index: int, name: str) -> str:
  """`layer 0 (word_emb)`, `layer 1 (lstm_outputs1)`, ..."""
  return f"layer {index} ({name})"


def occurrence_vectors(signature, occurrences: Sequence[Occurrence],
                       layers: Sequence[str],
                       batch_size: int = BATCH_SIZE) -> dict[str, np.ndarray]:
  """The word's vector in each sentence, per layer.

  Args:
    signature: the SavedModel's `tokens` signature (`tokens` (B, max_len)
      string padded with "", `sequence_len` (B,) int32).
    occurrences: from `locate`.
    layers: output names of the signature (see `layer_names`).
    batch_size: sentences per call.

  Returns:
    {layer: (N, width) float64}: the mean of the layer's vectors over the
    word's token positions, one row per occurrence.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rows = {layer: [] for layer in layers}
  for begin in range(0, len(occurrences), batch_size):
    batch = occurrences[begin:begin + batch_size]
    max_len = max(len(occurrence.tokens) for occurrence in batch)
    padded = [list(o.tokens) + [""] * (max_len - len(o.tokens))
              for o in batch]
    outputs = signature(
        tokens=tf.constant(padded, tf.string),  # (B, max_len)
        sequence_len=tf.constant([len(o.tokens) for o in batch],
                                 tf.int32))  # (B,)
    for layer in layers:
      values = outputs[layer].numpy().astype(np.float64)  # (B, T, width)
      for i, occurrence in enumerate(batch):
        span = values[i, occurrence.start:occurrence.start + occurrence.length]
        rows[layer].append(span.mean(axis=0))  # (width,)
  return {layer: np.stack(vectors) for layer, vectors in rows.items()}


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
  """(N, D) -> (N, N) cosine similarities, in float64.

  A zero vector has cosine 0 with everything (itself included).
  """
  vectors = np.asarray(vectors, dtype=np.float64)  # (N, D)
  if vectors.ndim != 2:
    raise ValueError(f"cosine_matrix: expected (N, D) vectors, got shape "
                     f"{vectors.shape}.")
  norms = np.linalg.norm(vectors, axis=1, keepdims=True)  # (N, 1)
  units = np.divide(vectors, norms, out=np.zeros_like(vectors),
                    where=norms > 0)
  return np.clip(units @ units.T, -1.0, 1.0)  # (N, N)


def sense_separation(matrix: np.ndarray,
                     labels: Sequence[str]) -> SenseSeparation:
  """Mean cosine within a sense and across senses.

  Args:
    matrix: (N, N) cosine similarities (`cosine_matrix`).
    labels: N sense labels, one per row.

  Returns:
    `SenseSeparation`: the means over the pairs i < j whose labels are equal
    (within) and different (across); the diagonal is left out. A mean with
    no pair is NaN.
  """
  matrix = np.asarray(matrix, dtype=np.float64)
  n = len(labels)
  if matrix.shape != (n, n):
    raise ValueError(f"sense_separation: {n} labels for a matrix of shape "
                     f"{matrix.shape}.")
  labels = np.asarray(labels)
  upper = np.triu(np.ones((n, n), dtype=bool), k=1)  # pairs i < j
  same = labels[:, None] == labels[None, :]  # (N, N)
  within = matrix[upper & same]
  across = matrix[upper & ~same]
  mean = lambda values: float(values.mean()) if values.size else float("nan")
  return SenseSeparation(mean(within), mean(across), int(within.size),
                         int(across.size))


def analyze(saved_model, word: str, sentences: Sequence[Sentence],
            lowercase: bool = False,
            batch_size: int = BATCH_SIZE) -> PolysemyResult:
  """Cosine matrices of `word` across `sentences`, for every layer.

  Args:
    saved_model: the path of a SavedModel written by `elmo_tf.export`.
    word: the target word.
    sentences: `Sentence`s, each containing the word.
    lowercase: lower-case sentences and word first (see `locate`).
    batch_size: sentences per call of the SavedModel.

  Raises:
    PolysemyError: see `locate`; also for a path that is not an elmo_tf
      SavedModel.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from elmo_tf import export as export_lib  # pylint: disable=g-import-not-at-top
  from elmo_tf import tokenizers as tokenizers_lib  # pylint: disable=g-import-not-at-top

  try:
    _, info = export_lib.read_export(saved_model)
  except (ValueError, OSError) as e:
    raise PolysemyError(str(e)) from None
  tokenizer = tokenizers_lib.get_tokenizer(info["tokenization"])
  occurrences = locate(sentences, word, tokenizer, lowercase=lowercase)
  layers = layer_names(int(info["n_layers"]))
  logging.info("Loading %s (tokenization %s, %d LSTM layers).", saved_model,
               info["tokenization"], info["n_layers"])
  signature = export_lib.load_saved_model(saved_model).signatures["tokens"]
  vectors = occurrence_vectors(signature, occurrences, layers,
                               batch_size=batch_size)
  matrices = {layer: cosine_matrix(vectors[layer]) for layer in layers}
  return PolysemyResult(word, occurrences, layers, vectors, matrices)


# === Presentation ===


def display_width(text: str) -> int:
  """Terminal columns of `text`: wide (Han, full-width) characters count 2,
  combining marks 0."""
  width = 0
  for char in text:
    if unicodedata.combining(char):
      continue
    width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
  return width


def _clip(text: str, width: int) -> str:
  """The longest prefix of `text` that fits in `width` columns."""
  result, used = [], 0
  for char in text:
    w = display_width(char)
    if used + w > width:
      break
    result.append(char)
    used += w
  return "".join(result)


def excerpt(text: str, word: str, width: int = TABLE_EXCERPT_WIDTH) -> str:
  """A short excerpt of `text` around the first `word` (case-insensitive),
  at most `width` columns, with "…" where text was cut."""
  if display_width(text) <= width:
    return text
  position = max(text.lower().find(word.lower()), 0)
  # Start a few columns before the word, so that its left context shows.
  start = position
  lead = 0
  while start > 0 and lead < width // 3:
    start -= 1
    lead += display_width(text[start])
  # In spaced text, start at a word: after the first space before the word.
  space = text.find(" ", start, position)
  if start > 0 and not text[start - 1].isspace() and space >= 0:
    start = space + 1
  prefix = "…" if start > 0 else ""
  body = _clip(text[start:], width - len(prefix) - 1)
  suffix = "…" if start + len(body) < len(text) else ""
  return prefix + body + suffix


def _pad(text: str, width: int, right: bool = False) -> str:
  padding = " " * max(width - display_width(text), 0)
  return padding + text if right else text + padding


def row_labels(occurrences: Sequence[Occurrence], word: str,
               width: int = TABLE_EXCERPT_WIDTH) -> list[str]:
  """`L<line> <excerpt>` for every occurrence."""
  return [f"L{o.sentence.line_number} {excerpt(o.sentence.text, word, width)}"
          for o in occurrences]


def format_table(matrix: np.ndarray, labels: Sequence[str],
                 column_labels: Sequence[str] | None = None) -> str:
  """A text table of `matrix`, rows labelled by `labels`, columns by
  `column_labels` (default: the first word of each label, e.g. `L3`)."""
  if column_labels is None:
    column_labels = [label.split(" ", 1)[0] for label in labels]
  label_width = max(display_width(label) for label in labels)
  cell = max(6, max(display_width(c) for c in column_labels))
  lines = [_pad("", label_width) + "  " + " ".join(
      _pad(c, cell, right=True) for c in column_labels)]
  for label, row in zip(labels, matrix):
    lines.append(_pad(label, label_width) + "  " + " ".join(
        _pad(f"{value:.3f}", cell, right=True) for value in row))
  return "\n".join(lines)


def format_result(result: PolysemyResult,
                  senses: Sequence[str] | None = None) -> str:
  """Every layer's table (and, with `senses`, its within/across means)."""
  labels = row_labels(result.occurrences, result.word)
  blocks = []
  for index, layer in enumerate(result.layers):
    matrix = result.matrices[layer]
    block = [f"{layer_title(index, layer)}: cosine similarity of "
             f"{result.word!r}", format_table(matrix, labels)]
    if senses is not None:
      separation = sense_separation(matrix, senses)
      block.append(
          f"mean within a sense {separation.within:.3f} "
          f"({separation.n_within} pairs), across senses "
          f"{separation.across:.3f} ({separation.n_across} pairs)")
    blocks.append("\n".join(block))
  return "\n\n".join(blocks)


def find_cjk_font() -> str | None:
  """The family name of an installed font with Chinese glyphs, or None.

  Looks at matplotlib's font list first; if its cache predates the font's
  installation, registers system font files whose names look like CJK
  fonts and looks again.
  """
  from matplotlib import font_manager  # pylint: disable=g-import-not-at-top

  def known():
    names = {font.name for font in font_manager.fontManager.ttflist}
    return next((family for family in CJK_FONT_FAMILIES if family in names),
                None)

  family = known()
  if family is None:
    for path in font_manager.findSystemFonts():
      if any(hint in os.path.basename(path).lower()
             for hint in _CJK_FONT_FILE_HINTS):
        try:
          font_manager.fontManager.addfont(path)
        except (OSError, RuntimeError, ValueError) as e:
          logging.info("Cannot read font %s: %s", path, e)
    family = known()
  return family


def plot_heatmaps(result: PolysemyResult, path: str,
                  senses: Sequence[str] | None = None,
                  title: str | None = None, dpi: int = 80) -> str:
  """Draws one heatmap per layer into a PNG at `path`; returns `path`.

  Rows and columns are the sentences (rows labelled `L<line> <excerpt>`,
  followed by `[sense]` when `senses` are given, columns `L<line>`); every
  cell shows its cosine, and with `senses` every panel's title gives the
  mean cosine within and across senses. All panels share one colour
  scale. Uses matplotlib's Agg canvas directly (no pyplot, no global
  backend change). Chinese labels need a CJK font (`find_cjk_font`); without
  one, a warning is logged and they render as boxes.
  """
  # pylint: disable=g-import-not-at-top
  import matplotlib
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  # pylint: enable=g-import-not-at-top

  families = ["DejaVu Sans"]
  cjk = find_cjk_font()
  if cjk is not None:
    families.append(cjk)
  elif any(display_width(o.sentence.text) > len(o.sentence.text)
           for o in result.occurrences):
    logging.warning(
        "No font with Chinese glyphs found (tried %s); CJK labels will be "
        "drawn as boxes. Install one, e.g. `apt-get install "
        "fonts-wqy-microhei`.", ", ".join(CJK_FONT_FAMILIES))

  n = len(result.occurrences)
  n_panels = len(result.layers)
  labels = row_labels(result.occurrences, result.word, PLOT_EXCERPT_WIDTH)
  if senses is not None:
    labels = [f"{label} [{sense}]" for label, sense in zip(labels, senses)]
  columns = [f"L{o.sentence.line_number}" for o in result.occurrences]
  # One colour scale for all panels, from the lowest cosine (rounded down to
  # 0.1) to 1, so that the contextual layers' differences show.
  lowest = min(float(m.min()) for m in result.matrices.values())
  vmin = min(float(np.floor(lowest * 10) / 10), 0.9)
  panel = 0.5 * n + 1.0  # inches
  label_inches = 0.09 * max(display_width(label) for label in labels) + 0.3
  font_size = 9 if n <= 10 else 7
  # A list of concrete families: matplotlib (>= 3.6) takes each glyph from
  # the first family that has it.
  with matplotlib.rc_context({"font.family": families,
                              "axes.unicode_minus": False}):
    figure = Figure(figsize=(label_inches + n_panels * panel + 1.0,
                             panel + 1.2), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, n_panels, sharey=True, squeeze=False)[0]
    image = None
    for index, (ax, layer) in enumerate(zip(axes, result.layers)):
      matrix = result.matrices[layer]
      image = ax.imshow(matrix, vmin=vmin, vmax=1.0, cmap="viridis")
      panel_title = layer_title(index, layer)
      if senses is not None:
        separation = sense_separation(matrix, senses)
        panel_title += (f"\nwithin a sense {separation.within:.3f}, "
                        f"across {separation.across:.3f}")
      ax.set_title(panel_title, fontsize=font_size + 1)
      ax.set_xticks(range(n), columns, fontsize=font_size, rotation=90)
      ax.set_yticks(range(n), labels, fontsize=font_size)
      for i in range(n):
        for j in range(n):
          value = matrix[i, j]
          # Dark text on the light (high) end of viridis.
          color = "black" if value > vmin + 0.6 * (1.0 - vmin) else "white"
          ax.text(j, i, f"{value:.2f}", ha="center", va="center",
                  fontsize=font_size - 1, color=color)
    figure.colorbar(image, ax=list(axes), shrink=0.8)
    figure.suptitle(title or f"Cosine similarity of {result.word!r} "
                    "between sentences, per layer", fontsize=font_size + 2)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    figure.savefig(path, format="png", dpi=dpi,
                   pil_kwargs={"optimize": True})
  logging.info("Heatmaps written to %s.", path)
  return path
