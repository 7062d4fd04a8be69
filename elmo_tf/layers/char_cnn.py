"""ELMo's character encoder: character ids of a token -> one token vector."""

import keras
import tensorflow as tf

from elmo_tf import config as config_lib
from elmo_tf import vocab
from elmo_tf.layers.highway import Highway


# Under mixed_bfloat16, filter widths with fewer filters than this run their
# convolution in float32: their matmuls are narrow (16 to 256 output
# columns), and oneDNN's bfloat16 matmuls at those shapes, above all the
# kernel gradient (windows^T @ d_features, a long reduction into a small
# matrix), were slower than float32 ones on AMX (`small` filters 0-4:
# 21.3 ms per step against 10.1 in float32, while 512 and 1024 filters
# gain 2x; BENCHMARKS.md, profile of `small`). Float32 is also the more
# exact of the two, so nothing is lost.
_MIN_FILTERS_FOR_BFLOAT16 = 512


def char_row_keys(char_ids):
  """One string key per row of character ids, for the vector cache.

  (n, max_characters_per_token) int32 -> (n,) string: the row without its
  trailing padding-char slots, as UTF-8 code points. Two rows get the same
  key exactly when they are equal (the rows have a fixed width, so dropping
  the trailing padding is reversible), so a key identifies what the
  encoder sees: tokens cut to the same first 48 bytes share one.
  """
  rows = tf.RaggedTensor.from_tensor(tf.cast(char_ids, tf.int32),
                                     padding=vocab.PADDING_CHAR)
  return tf.strings.unicode_encode(rows, "UTF-8")


def _dense_gradient(table):
  """`table` (a variable or tensor) as a tensor whose gradient is made
  dense (summed per row) here.

  Every character id occurs thousands of times in a step's windows; as
  IndexedSlices their gradient would count each occurrence as its own row in
  the global gradient norm (and in the clip), where the table's real
  gradient is the per-row sum. A product with a scalar one does it: Mul's
  gradient multiplies the incoming gradient as a dense tensor. (Not a
  tf.custom_gradient, whose gradient function cannot take IndexedSlices
  inside the encoder-cache tf.cond of exported models.)
  """
  table = tf.convert_to_tensor(table)
  return table * tf.ones((), table.dtype)


class _MaxPooledConvolution(keras.layers.Layer):
  """One filter width of the character CNN: valid convolution + max over slots.

  The convolution is computed as one matmul over explicit windows
  ("im2col"). On this project's CPUs that is a little faster than
  `tf.nn.conv1d` in float32 and far faster in bfloat16, whose conv1d
  gradient is very slow (about 17x at the `small` filters).
  The bias is added after the max (equivalent, as it is the same for every
  slot). Internal to `CharacterEncoder`.
  """

  def __init__(self, width, n_filters, kernel_initializer, **kwargs):
    # It computes in the dtype of the character table it is given (float32
    # for narrow filters under mixed_bfloat16, see encode_rows), so Keras
    # must not cast that to the policy's compute dtype.
    super().__init__(autocast=False, **kwargs)
    self.width = width
    self.n_filters = n_filters
    self.kernel_initializer = kernel_initializer

  def build(self, input_shape):
    embedding_dim = input_shape[-1]
    # (width, embedding_dim, n_filters) = bilm-tf's W_cnn_i[0]. Not
    # autocast: `call` casts them to the dtype it computes in.
    self.kernel = self.add_weight(
        name="kernel", shape=(self.width, embedding_dim, self.n_filters),
        initializer=self.kernel_initializer, autocast=False)
    self.bias = self.add_weight(
        name="bias", shape=(self.n_filters,), initializer="zeros",
        autocast=False)
    self.built = True

  def call(self, char_ids, embeddings, row_windows=None,
           window_max_kernel=False):
    """Max over windows of the convolution, per row.

    Args:
      char_ids: (n, slots) int32.
      embeddings: (n_characters, embedding_dim), the character table in the
        compute dtype.
      row_windows: None to convolve every window of every row, or
        (starts, rows), both (w,) int32: the start slot of each window to
        convolve and the row it belongs to, with `rows` sorted and naming
        every row at least once. Starts past the last window of a row
        (slots - width) are moved back to it: a repeated window leaves the
        max unchanged.
      window_max_kernel: with row_windows, embed the windows with
        `elmo_tf.ops.window_max.window_embeddings` and take the max with
        `elmo_tf.ops.window_max` (loaded) instead of tf.gather and
        tf.math.segment_max. `embeddings` is then the table as it is (its
        gradient is already dense), not passed through `_dense_gradient`.

    Returns:
      (n, n_filters).
    """
    if row_windows is None:
      return self._pool_all_windows(char_ids, embeddings)
    starts, rows = row_windows
    slots = tf.shape(char_ids)[1]
    embedding_dim = embeddings.shape[-1]
    starts = tf.minimum(starts, slots - self.width)  # (w,)
    # Windows are cut from the ids and then embedded (see _pool_all_windows).
    first_slot = rows * slots + starts  # (w,) index into the flat ids
    id_windows = tf.gather(
        tf.reshape(char_ids, (-1,)),
        first_slot[:, None] + tf.range(self.width)[None, :])  # (w, width)
    if window_max_kernel:
      from elmo_tf.ops import window_max  # pylint: disable=g-import-not-at-top
      # (w, width * embedding_dim); its gradient is the table's, dense.
      windows = window_max.window_embeddings(embeddings, id_windows)
    else:
      windows = tf.reshape(tf.gather(embeddings, id_windows),
                           (-1, self.width * embedding_dim))
    kernel = tf.reshape(tf.cast(self.kernel, embeddings.dtype),
                        (self.width * embedding_dim, self.n_filters))
    features = tf.matmul(windows, kernel)  # (w, n_filters)
    # (n, n_filters); `rows` is sorted and names every row.
    if window_max_kernel:
      from elmo_tf.ops import window_max  # pylint: disable=g-import-not-at-top
      pooled = window_max.window_max(features, rows, tf.shape(char_ids)[0])
    else:
      pooled = tf.math.segment_max(features, rows)
    return pooled + tf.cast(self.bias, embeddings.dtype)

  def _pool_all_windows(self, char_ids, embeddings):
    """`call` over all `slots - width + 1` windows of every row."""
    n_slots = tf.shape(char_ids)[1] - self.width + 1
    embedding_dim = embeddings.shape[-1]
    # The windows are cut from the ids and then embedded, not cut from the
    # embedded characters: slicing ints has no gradient, while every slice
    # of the embedded characters has a full-size StridedSliceGrad (28 per
    # step at the `small` filters). (n, n_slots, width)
    id_windows = tf.stack(
        [char_ids[:, i:i + n_slots] for i in range(self.width)], axis=-1)
    # (n * n_slots, width * embedding_dim), window-major like the kernel.
    windows = tf.reshape(tf.gather(embeddings, id_windows),
                         (-1, self.width * embedding_dim))
    kernel = tf.reshape(tf.cast(self.kernel, embeddings.dtype),
                        (self.width * embedding_dim, self.n_filters))
    features = tf.reshape(tf.matmul(windows, kernel),
                          (-1, n_slots, self.n_filters))
    # (n, n_filters)
    return (tf.reduce_max(features, axis=1) +
            tf.cast(self.bias, embeddings.dtype))


@keras.saving.register_keras_serializable(package="elmo_tf")
class CharacterEncoder(keras.layers.Layer):
  """Character CNN token encoder (Kim et al. 2016; ELMo's layer 0).

  char ids -> embedding (`n_characters` x `embedding_dim`) -> one valid
  Conv1D per filter width over the `max_characters_per_token` slots -> max
  over slots -> activation -> `n_highway` `Highway` layers -> linear
  projection to `projection_dim`.

  Padding tokens (all-zero char-id rows) give all-zero outputs; every other
  row goes through the network unchanged (bilm-tf does not zero the
  embedding of the padding character).

  Two exact shortcuts (same outputs and gradients) cut the encoder's cost,
  which dominates ELMo's compute; both give dynamic shapes (not for XLA):
  - `deduplicate`: the network runs once per distinct char-id row of the
    input (`tf.raw_ops.UniqueV2` over rows) and the results are gathered
    back to every position; gradients flow through the gather. A batch of
    natural text repeats its frequent tokens many times.
  - `trim_padding`: the convolutions only run over the windows that
    start inside each token (and one after it). The slots after a token's
    end-word id all hold the padding char, so every window beyond them has
    the same value, which one such window still provides to the max.

  A third shortcut is for inference with frozen weights:
  `set_vector_cache(table, vectors)` attaches precomputed outputs (e.g.
  one per vocabulary word, computed at export by `elmo_tf.export`); rows
  found in `table` are gathered from `vectors` and the network runs only on
  the others, not at all when every row is cached. The caller keeps the
  cache consistent with the weights (it is not updated by training).

  Weight layout (for conversion from bilm-tf hdf5; `i` = filter index):
  `char_embedding/embeddings` (n_characters, embedding_dim) = `char_embed`
  with a zero row 0 prepended; `cnn_{i}/kernel` (width, embedding_dim, n)
  = `CNN/W_cnn_{i}[0]`; `cnn_{i}/bias` = `CNN/b_cnn_{i}`; `highway_{k}/...`
  = `CNN_high_{k}/...`; `projection/kernel`, `projection/bias` =
  `CNN_proj/W_proj`, `CNN_proj/b_proj`.

  Args:
    projection_dim: width of the output token vectors.
    filters: sequence of (width, number of filters).
    n_highway: number of highway layers.
    embedding_dim: character embedding width.
    n_characters: number of character ids (row 0 = padding).
    max_characters_per_token: char slots per token (last input dimension).
    activation: applied after the max-pool ("relu" or "tanh" in bilm-tf).
    deduplicate: encode each distinct token of a call only once.
    trim_padding: convolve only the windows that start inside each token
      (and one after it), not all `max_characters_per_token` slots.
    window_max_kernel: with `trim_padding`, pool with the custom op
      `elmo_tf.ops.window_max` (same outputs; a one-pass gradient) when it
      loads. A speed knob for training; exports turn it off.
    highway_kernel: the highway layers' elementwise math as the custom op
      `elmo_tf.ops.highway_gate` when it loads (float32 math: the same
      outputs in float32, within rounding under bfloat16). A speed knob for
      training; exports turn it off.
    Unset arguments (None) take their defaults from `CharCNNConfig`.
    **kwargs: standard `keras.layers.Layer` arguments.

  Example:
  ```python
  encoder = CharacterEncoder(projection_dim=16, filters=((1, 8), (2, 8)),
                             n_highway=1, name="char_encoder")
  char_ids = tf.random.uniform((2, 5, 50), 1, 262, dtype=tf.int32)
  vectors = encoder(char_ids)  # (2, 5, 16)
  ```
  """

  def __init__(self,
               projection_dim,
               filters=None,
               n_highway=None,
               embedding_dim=None,
               n_characters=None,
               max_characters_per_token=None,
               activation=None,
               deduplicate=None,
               trim_padding=None,
               window_max_kernel=None,
               highway_kernel=None,
               **kwargs):
    super().__init__(**kwargs)
    defaults = config_lib.CharCNNConfig()
    pick = lambda value, default: default if value is None else value
    self.projection_dim = int(projection_dim)
    self.filters = tuple(
        (int(w), int(n)) for w, n in pick(filters, defaults.filters))
    self.n_highway = int(pick(n_highway, defaults.n_highway))
    self.embedding_dim = int(pick(embedding_dim, defaults.embedding_dim))
    self.n_characters = int(pick(n_characters, defaults.n_characters))
    self.max_characters_per_token = int(
        pick(max_characters_per_token, defaults.max_characters_per_token))
    self.activation_name = pick(activation, defaults.activation)
    self.activation = keras.activations.get(self.activation_name)
    self.deduplicate = bool(pick(deduplicate, defaults.deduplicate))
    self.trim_padding = bool(pick(trim_padding, defaults.trim_padding))
    self.window_max_kernel = bool(
        pick(window_max_kernel, defaults.window_max_kernel))
    self.highway_kernel = bool(pick(highway_kernel, defaults.highway_kernel))
    for width, _ in self.filters:
      if width > self.max_characters_per_token:
        raise ValueError(
            f"Filter width {width} exceeds max_characters_per_token="
            f"{self.max_characters_per_token}.")
    self.n_filters = sum(n for _, n in self.filters)
    # (table, vectors) of `set_vector_cache`; not tracked (not a weight).
    object.__setattr__(self, "_vector_cache", None)

    # === Layers ===
    # bilm-tf: char embedding U(-1, 1); relu convolutions U(-0.05, 0.05),
    # tanh convolutions N(0, 1 / (width * embedding_dim)).
    self.char_embedding = keras.layers.Embedding(
        self.n_characters, self.embedding_dim,
        embeddings_initializer=keras.initializers.RandomUniform(-1.0, 1.0),
        name="char_embedding", dtype=self.dtype_policy)
    self.convolutions = []
    for i, (width, n) in enumerate(self.filters):
      if self.activation_name == "tanh":
        init = keras.initializers.RandomNormal(
            stddev=(1.0 / (width * self.embedding_dim)) ** 0.5)
      else:
        init = keras.initializers.RandomUniform(-0.05, 0.05)
      self.convolutions.append(_MaxPooledConvolution(
          width, n, kernel_initializer=init, name=f"cnn_{i}",
          dtype=self.dtype_policy))
    self.highways = [
        Highway(name=f"highway_{k}", dtype=self.dtype_policy)
        for k in range(self.n_highway)]
    self.projection = keras.layers.Dense(
        self.projection_dim,
        kernel_initializer=keras.initializers.RandomNormal(
            stddev=(1.0 / self.n_filters) ** 0.5),
        name="projection", dtype=self.dtype_policy)

  def build(self, input_shape=None):
    slots = self.max_characters_per_token
    self.char_embedding.build((None, slots))
    for conv in self.convolutions:
      conv.build((None, slots, self.embedding_dim))
    for highway in self.highways:
      highway.build((None, self.n_filters))
    self.projection.build((None, self.n_filters))
    self.built = True

  def encode_rows(self, char_ids):
    """The network on flat rows, without deduplication or padding zeroing.

    Args:
      char_ids: (n, max_characters_per_token) int32.

    Returns:
      (n, projection_dim) tensor in the compute dtype.
    """
    row_windows = None
    if self.trim_padding:
      char_ids, row_windows = self._trim_padding_slots(char_ids)
    compute_dtype = tf.as_dtype(self.compute_dtype)
    tables = {}  # The character table in each dtype a convolution runs in.
    use_kernel = row_windows is not None and self._use_window_max_kernel()
    pooled = []
    for conv in self.convolutions:
      dtype = compute_dtype
      if (compute_dtype == tf.bfloat16 and
          conv.n_filters < _MIN_FILTERS_FOR_BFLOAT16):
        dtype = tf.float32
      if dtype not in tables:
        table = tf.cast(self.char_embedding.embeddings,
                        dtype)  # (n_characters, embedding_dim)
        # (The window ops' gradient of the table is dense already.)
        tables[dtype] = table if use_kernel else _dense_gradient(table)
      # Max over the slots of a valid convolution, (n, filters).
      pooled.append(tf.cast(
          conv(char_ids, embeddings=tables[dtype], row_windows=row_windows,
               window_max_kernel=use_kernel), compute_dtype))
    x = self.activation(tf.concat(pooled, axis=-1))  # (n, n_filters)
    use_gate_kernel = self._use_highway_kernel()
    for highway in self.highways:
      x = highway(x, gate_kernel=use_gate_kernel)  # (n, n_filters)
    return self.projection(x)  # (n, projection_dim)

  def _use_window_max_kernel(self) -> bool:
    if not self.window_max_kernel:
      return False
    from elmo_tf.ops import window_max  # pylint: disable=g-import-not-at-top
    return window_max.load() is not None

  def _use_highway_kernel(self) -> bool:
    if not self.highway_kernel:
      return False
    from elmo_tf.ops import highway_gate  # pylint: disable=g-import-not-at-top
    return highway_gate.load() is not None

  def _trim_padding_slots(self, char_ids):
    """The windows that can change a row's max-pooled features.

    Row `r` has its real slots (ids other than the padding char) in
    [0, length_r); every slot after them is the padding char. A window that
    starts at or after length_r therefore has one fixed value per filter
    width, so the windows starting at 0 ... length_r (the last one all
    padding, where the row has room for it) give every max. Natural tokens
    are short (PTB's distinct tokens of a batch: 8 slots on average, 17 for
    the longest), so this convolves about half the windows that cutting
    every row at the batch's longest token would. All-zero rows (padding
    tokens) get one window; their output is zeroed later.

    Args:
      char_ids: (n, max_characters_per_token) int32.

    Returns:
      char_ids cut to their first `max(length) + widest filter` slots
      (every kept window lies inside them), and (starts, rows), both (w,)
      int32: window start slots and their rows, rows ascending (the
      `row_windows` of `_MaxPooledConvolution`).
    """
    slots = self.max_characters_per_token
    is_real = tf.not_equal(char_ids, vocab.PADDING_CHAR)  # (n, slots)
    positions = tf.range(1, slots + 1, dtype=tf.int32)  # (slots,)
    lengths = tf.reduce_max(
        tf.where(is_real, positions, 0), axis=1)  # (n,)
    is_padding_token = tf.reduce_all(tf.equal(char_ids, 0), axis=1)  # (n,)
    lengths = tf.where(is_padding_token, 0, lengths)
    longest = tf.reduce_max(tf.concat([lengths, [0]], axis=0))
    widest = max(width for width, _ in self.filters)
    keep = tf.minimum(longest + widest, slots)
    # Starts 0 ... length_r of each row r: (w,) values with their row ids.
    starts = tf.ragged.range(lengths + 1)
    row_windows = (starts.flat_values,
                   tf.cast(starts.value_rowids(), tf.int32))
    return char_ids[:, :keep], row_windows

  def set_vector_cache(self, table, vectors):
    """Attaches (or with None, None removes) precomputed outputs.

    Args:
      table: a `tf.lookup` table `char_row_keys(row)` -> int32 row of
        `vectors`, -1 for rows it does not hold.
      vectors: (rows, projection_dim) float tensor or variable: what
        `encode_rows` gives for each cached row (zeros for an all-zero
        padding row).
    """
    cache = None if table is None else (table, vectors)
    object.__setattr__(self, "_vector_cache", cache)

  @property
  def vector_cache(self):
    """(table, vectors) of `set_vector_cache`, or None."""
    return self._vector_cache

  def call(self, inputs):
    char_ids = tf.cast(inputs, tf.int32)  # (..., chars)
    slots = self.max_characters_per_token
    outer_shape = tf.shape(char_ids)[:-1]
    flat = tf.reshape(char_ids, (-1, slots))  # (n, chars)
    if self.deduplicate:
      unique_rows, index = tf.raw_ops.UniqueV2(
          x=flat, axis=[0], out_idx=tf.int32)  # (u, chars), (n,)
      unique_rows = tf.ensure_shape(unique_rows, (None, slots))
      unique_vectors = self._encode_rows_cached(unique_rows)
      vectors = tf.gather(unique_vectors, index)  # (n, projection_dim)
    else:
      vectors = self._encode_rows_cached(flat)  # (n, projection_dim)
    out_shape = tf.concat([outer_shape, [self.projection_dim]], axis=0)
    return tf.reshape(vectors, out_shape)  # (..., projection_dim)

  def _encode_rows_cached(self, rows):
    """rows (n, chars) -> (n, projection_dim): from the vector cache where
    it has the row, else from the network (padding rows zero)."""
    if self._vector_cache is None:
      return self._encode_and_zero_padding(rows)
    table, cache = self._vector_cache
    index = table.lookup(char_row_keys(rows))  # (n,) int32, -1: not cached
    is_cached = index >= 0
    hits = tf.cast(tf.where(is_cached)[:, 0], tf.int32)  # (h,)
    misses = tf.cast(tf.where(~is_cached)[:, 0], tf.int32)  # (n - h,)
    hit_vectors = tf.cast(tf.gather(cache, tf.gather(index, hits)),
                          self.compute_dtype)  # (h, projection_dim)
    miss_rows = tf.gather(rows, misses)  # (n - h, chars)
    # The network only for the rows not cached, and not at all (not even
    # its ops on empty tensors) when there are none: a sentence of
    # vocabulary words costs a lookup and a gather.
    miss_vectors = tf.cond(
        tf.size(misses) > 0,
        lambda: self._encode_and_zero_padding(miss_rows),
        lambda: tf.zeros((0, self.projection_dim), self.compute_dtype))
    # Back in row order: (n, projection_dim).
    return tf.dynamic_stitch([hits, misses], [hit_vectors, miss_vectors])

  def _encode_and_zero_padding(self, rows):
    # rows: (n, chars)
    vectors = self.encode_rows(rows)  # (n, projection_dim)
    is_token = tf.reduce_any(rows > 0, axis=-1, keepdims=True)  # (n, 1)
    return vectors * tf.cast(is_token, vectors.dtype)

  def compute_output_shape(self, input_shape):
    return tuple(input_shape[:-1]) + (self.projection_dim,)

  def get_config(self):
    config = super().get_config()
    config.update({
        "projection_dim": self.projection_dim,
        "filters": [list(f) for f in self.filters],
        "n_highway": self.n_highway,
        "embedding_dim": self.embedding_dim,
        "n_characters": self.n_characters,
        "max_characters_per_token": self.max_characters_per_token,
        "activation": self.activation_name,
        "deduplicate": self.deduplicate,
        "trim_padding": self.trim_padding,
        "window_max_kernel": self.window_max_kernel,
        "highway_kernel": self.highway_kernel,
    })
    return config

  @classmethod
  def from_model_config(cls, model_config, **kwargs):
    """Builds the encoder of a `ModelConfig` (projection to the LSTM width)."""
    cnn = model_config.char_cnn
    return cls(
        projection_dim=model_config.lstm.projection_dim,
        filters=cnn.filters,
        n_highway=cnn.n_highway,
        embedding_dim=cnn.embedding_dim,
        n_characters=cnn.n_characters,
        max_characters_per_token=cnn.max_characters_per_token,
        activation=cnn.activation,
        deduplicate=cnn.deduplicate,
        trim_padding=cnn.trim_padding,
        window_max_kernel=cnn.window_max_kernel,
        highway_kernel=cnn.highway_kernel,
        **kwargs)
