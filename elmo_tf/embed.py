"""Embedding a text file: one sentence per line -> ELMo vectors on disk.

`embed_file(module, input_path, output_path, ...)` runs a SavedModel written
by elmo_tf (or the in-memory module of a training run, `export.load`) over a
text file, in batches of sentences of similar length, and writes:

* `.hdf5` (or `.h5`): the layout of AllenNLP's `elmo` command. One dataset
  per line, named by its 0-based line number ("0", "1", ...), float32:
    layers="all"      (L + 1, n_tokens, 2P)  layer 0 is the token vector
                      repeated for both directions ([x; x]), as in AllenNLP
    layers="top"      (n_tokens, 2P)         the top biLM layer
    layers="average"  (n_tokens, 2P)         the mean of the L + 1 layers
    layers="mix"      (n_tokens, 2P)         the SavedModel's `elmo` output:
                                             gamma * sum_j softmax(s)_j h_j
  plus `sentence_to_index`, a one-element string dataset holding the JSON
  {sentence text: line number as a string} (a repeated sentence maps to its
  last line, as in AllenNLP). An empty line is an empty array (n_tokens = 0).
* `.npy`: one vector per line, the mean over the sentence's tokens (zeros for
  an empty line): (N, L + 1, 2P) for "all", (N, 2P) otherwise; N is the
  number of lines. Written through a memory map.

Memory stays flat in the file size: the file is read in chunks, each chunk
is sorted by length into batches, and each batch is written as soon as it is
computed (only the text index of `.hdf5` grows with the file). The output is
written under a temporary name and renamed when complete.
"""

import dataclasses
import json
import os
import time
from typing import Callable

from absl import logging
import numpy as np
import tensorflow as tf

from elmo_tf import text_io

LAYER_CHOICES = ("all", "top", "average", "mix")
OUTPUT_FORMATS = (".hdf5", ".h5", ".npy")
# Lines read at once; each chunk is sorted by length into batches.
_CHUNK_BATCHES = 16


@dataclasses.dataclass
class EmbedStats:
  """What `embed_file` did."""
  lines: int = 0
  embedded: int = 0
  bad_lines: int = 0
  tokens: int = 0
  seconds: float = 0.0

  @property
  def sentences_per_second(self) -> float:
    return self.embedded / max(self.seconds, 1e-9)


def select_layers(outputs: dict, layers: str) -> np.ndarray:
  """(B, T, D) or (B, L + 1, T, D) float32 of a batch's output dict."""
  n_layers = sum(1 for key in outputs if key.startswith("lstm_outputs"))
  word = outputs["word_emb"].numpy()  # (B, T, P)
  if layers == "mix":
    return outputs["elmo"].numpy()
  if layers == "top":
    return outputs[f"lstm_outputs{n_layers}"].numpy()
  stack = np.stack([np.concatenate([word, word], axis=-1)] + [
      outputs[f"lstm_outputs{i}"].numpy() for i in range(1, n_layers + 1)],
                   axis=1)  # (B, L + 1, T, 2P)
  if layers == "all":
    return stack
  # "average": padding positions are zero in every layer.
  return stack.mean(axis=1)  # (B, T, 2P)


def _batches(chunk: list[tuple[int, str]], batch_size: int):
  """The chunk's lines sorted by length (characters) into batches."""
  ordered = sorted(chunk, key=lambda item: len(item[1]))
  for start in range(0, len(ordered), batch_size):
    yield ordered[start:start + batch_size]


def embed_file(module, input_path: str, output_path: str,
               layers: str = "all", batch_size: int = 32,
               on_bad_line: str = "error", overwrite: bool = False,
               progress: Callable[[int, EmbedStats], None] | None = None
               ) -> EmbedStats:
  """Embeds every line of `input_path` into `output_path` (see above).

  Args:
    module: what `export.load` returns: has `default(text)` returning the
      output dict of elmo_tf's SavedModel.
    input_path: UTF-8 text, one sentence per line.
    output_path: `.hdf5`/`.h5` (AllenNLP's layout) or `.npy`.
    layers: one of LAYER_CHOICES.
    batch_size: sentences per call of the model.
    on_bad_line: "error" (stop, naming file:line) or "skip" (count it;
      `.hdf5` has no dataset for that line, `.npy` a zero row).
    overwrite: replace an existing output.
    progress: called after every batch with (lines done, stats).

  Returns:
    `EmbedStats`.

  Raises:
    text_io.InputError: a bad input or output path, or a bad line.
  """
  if layers not in LAYER_CHOICES:
    raise ValueError(f"layers must be one of {LAYER_CHOICES}, got {layers!r}.")
  extension = os.path.splitext(output_path)[1].lower()
  if extension not in OUTPUT_FORMATS:
    raise text_io.InputError(
        f"{output_path}: the output must end in one of {OUTPUT_FORMATS}.")
  n_lines = text_io.count_lines(input_path)
  stats = EmbedStats()
  read_stats = text_io.ReadStats()
  start = time.perf_counter()
  with text_io.atomic_output(output_path, overwrite=overwrite) as partial:
    writer = (_NpyWriter(partial, n_lines) if extension == ".npy"
              else _Hdf5Writer(partial))
    try:
      for chunk in text_io.read_sentences(
          input_path, on_bad_line=on_bad_line,
          chunk_size=batch_size * _CHUNK_BATCHES, stats=read_stats):
        for batch in _batches(chunk, batch_size):
          outputs = module.default(tf.constant([text for _, text in batch]))
          vectors = select_layers(outputs, layers)
          lengths = outputs["sequence_len"].numpy()
          for (index, text), array, length in zip(batch, vectors, lengths):
            # Trim the time axis to the sentence: (..., n_tokens, D).
            writer.write(index, text, array[..., :int(length), :])
            stats.tokens += int(length)
          stats.embedded += len(batch)
          stats.lines = read_stats.lines
          stats.seconds = time.perf_counter() - start
          if progress is not None:
            progress(read_stats.lines, stats)
      writer.close()
    except BaseException:
      writer.abort()
      raise
  stats.lines = read_stats.lines
  stats.bad_lines = read_stats.bad_lines
  stats.seconds = time.perf_counter() - start
  logging.info("Embedded %d of %d lines (%d tokens, %d bad lines skipped) "
               "into %s in %.1f s (%.1f sentences/s).", stats.embedded,
               stats.lines, stats.tokens, stats.bad_lines, output_path,
               stats.seconds, stats.sentences_per_second)
  return stats


class _Hdf5Writer:
  """AllenNLP's `elmo` layout: a dataset per line, then sentence_to_index."""

  def __init__(self, path: str):
    import h5py  # pylint: disable=g-import-not-at-top
    self._h5py = h5py
    self._file = h5py.File(path, "w")
    self._index = {}

  def write(self, index: int, text: str, array: np.ndarray) -> None:
    self._file.create_dataset(str(index), data=array.astype(np.float32))
    self._index[text.strip()] = str(index)

  def close(self) -> None:
    self._file.create_dataset(
        "sentence_to_index", (1,), dtype=self._h5py.string_dtype(),
        data=[json.dumps(self._index, ensure_ascii=False)])
    self._file.close()

  def abort(self) -> None:
    self._file.close()


class _NpyWriter:
  """(N, ...) sentence vectors through a memory-mapped .npy file."""

  def __init__(self, path: str, n_lines: int):
    self._path = path
    self._n_lines = n_lines
    self._array = None

  def write(self, index: int, text: str, array: np.ndarray) -> None:
    del text
    # array: (n_tokens, D) or (L + 1, n_tokens, D) -> mean over tokens.
    n_tokens = array.shape[-2]
    vector = (array.mean(axis=-2) if n_tokens else
              np.zeros(array.shape[:-2] + array.shape[-1:], np.float32))
    if self._array is None:
      self._array = np.lib.format.open_memmap(
          self._path, mode="w+", dtype=np.float32,
          shape=(self._n_lines,) + vector.shape)
    self._array[index] = vector

  def close(self) -> None:
    if self._array is None:  # No line at all: an empty (0, 0) array.
      np.save(self._path, np.zeros((self._n_lines, 0), np.float32))
      return
    self._array.flush()
    del self._array

  def abort(self) -> None:
    self._array = None
