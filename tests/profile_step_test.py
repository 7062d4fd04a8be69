"""bench/profile_step.py: op classification, trace parsing, a tiny profile."""

import os
import tempfile
import unittest

from bench import profile_step

# Node names as they appear in traces of the trainer's step (tiny preset):
# forward ops, gradients carrying the forward scope, while-loop bodies and
# tf.cond branches (their function prefix before the node's own name).
NAMED = {
    "bidirectional_lm_1/backbone_1/char_encoder_1/projection_1/BiasAdd":
        profile_step.CHARACTER_CNN,
    "bidirectional_lm_1/backbone_1/char_encoder_1/UniqueV2":
        profile_step.CHARACTER_CNN,
    "gradient_tape/bidirectional_lm_1/backbone_1/char_encoder_1/cnn_1_1/"
    "strided_slice_2/StridedSliceGrad": profile_step.CHARACTER_CNN,
    "bidirectional_lm_1/backbone_1/forward_lstm_1_1/while/body/_176/"
    "bidirectional_lm_1/backbone_1/forward_lstm_1_1/while/MatMul":
        profile_step.LSTM,
    "gradient_tape/bidirectional_lm_1/backbone_1/backward_lstm_0_1/while/"
    "bidirectional_lm_1/backbone_1/backward_lstm_0_1/while_grad/body/_1046/"
    "gradient_tape/bidirectional_lm_1/backbone_1/backward_lstm_0_1/while/"
    "gradients/AddN_5": profile_step.LSTM,
    "gradient_tape/bidirectional_lm_1/backbone_1/forward_lstm_0_1/concat_8":
        profile_step.LSTM,
    "bidirectional_lm_1/backbone_1/lstm_input_dropout_1/Mul":
        profile_step.LSTM,
    "bidirectional_lm_1/softmax_1/MatMul": profile_step.SOFTMAX,
    "bidirectional_lm_1/softmax_1/while/cond/_0/bidirectional_lm_1/"
    "softmax_1/while/Unique": profile_step.SOFTMAX,
    "gradient_tape/bidirectional_lm_1/softmax_1/MatMul/MatMul_1":
        profile_step.SOFTMAX,
    "bidirectional_lm_1/Sum_1": profile_step.SOFTMAX,  # The loss.
    "gradient_tape/bidirectional_lm_1/Tile_1": profile_step.SOFTMAX,
    "adagrad/ResourceScatterSub": profile_step.OPTIMIZER,
    "adagrad/cond_1/else/_1205/adagrad/cond_1/GatherV2":
        profile_step.OPTIMIZER,
    "adam/Mul_5": profile_step.OPTIMIZER,
    "global_norm/L2Loss_3": profile_step.OPTIMIZER,
    "clip_by_global_norm/mul_7": profile_step.OPTIMIZER,
    "bidirectional_lm_1/backbone_1/mul_1": profile_step.OTHER,
    "gradient_tape/bidirectional_lm_1/backbone_1/concat": profile_step.OTHER,
}


class ClassifyTest(unittest.TestCase):

  def test_named_ops(self):
    for name, category in NAMED.items():
      with self.subTest(name=name):
        self.assertEqual(profile_step.classify(name, "Op"), category)

  def test_iterator_ops_are_input(self):
    self.assertEqual(
        profile_step.classify("IteratorGetNext", "IteratorGetNext"),
        profile_step.INPUT)

  def test_ops_without_a_known_scope_are_left_to_the_graph(self):
    for name in ("AddN_13", "SelectV2_19", "zeros_like_2", "Max_25",
                 "Cast_27/ReadVariableOp", "gradient_tape/AddN",
                 "some_scope/Identity"):
      with self.subTest(name=name):
        self.assertIsNone(profile_step.classify(name, "Op"))


class GraphCategoriesTest(unittest.TestCase):

  def test_neighbours_decide(self):
    import tensorflow as tf
    graph = tf.Graph()
    with graph.as_default():
      x = tf.constant(1.0)
      with tf.name_scope("gradient_tape/bidirectional_lm/backbone/"
                         "forward_lstm_0"):
        a = tf.identity(x, name="a")
        b = tf.identity(x, name="b")
      total = tf.add_n([a, b], name="AddN_3")  # Gradient sum: its inputs.
      guard = tf.where(tf.constant(True), total, tf.zeros_like(total),
                       name="SelectV2_1")  # Fed to the optimizer.
      with tf.name_scope("adam"):
        tf.identity(guard, name="update")
      tf.abs(x, name="Abs_2")  # Nothing scoped around it.
    found = profile_step.graph_categories(
        graph, ["AddN_3", "SelectV2_1", "Abs_2", "missing"])
    self.assertEqual(found, {"AddN_3": profile_step.LSTM,
                             "SelectV2_1": profile_step.OPTIMIZER})


def _space(lines):
  """An XSpace with one host plane; lines: {name: [(name, start, dur)]}."""
  from tensorflow.tsl.profiler.protobuf import xplane_pb2
  space = xplane_pb2.XSpace()
  plane = space.planes.add(name="/host:CPU")
  ids = {}
  for line_name, events in lines.items():
    line = plane.lines.add(name=line_name)
    for event_name, start, duration in events:
      if event_name not in ids:
        ids[event_name] = len(ids) + 1
        plane.event_metadata[ids[event_name]].name = event_name
      line.events.add(metadata_id=ids[event_name], offset_ps=start,
                      duration_ps=duration)
  return space


class ReadTraceTest(unittest.TestCase):

  def test_self_time_input_wait_and_background(self):
    space = _space({
        "tf_Compute/1": [
            ("ExecutorState::Process", 0, 100),
            # An op that runs another inline: 40 of its 50 are the inner op.
            ("outer/call:PartitionedCall", 0, 50),
            ("bidirectional_lm/softmax/inner:MatMul", 5, 40),
            ("bidirectional_lm/backbone/char_encoder/conv:Conv2D", 60, 30),
        ],
        "tf_data_iterator_get_next/2": [
            ("IteratorGetNextOp::DoCompute", 0, 20),
        ],
        "tf_data_private_threadpool/3": [("add:AddV2", 0, 7)],
    })
    times = profile_step.read_trace(space)
    self.assertEqual(times.step_ops["outer/call"].picoseconds, 10)
    self.assertEqual(
        times.step_ops["bidirectional_lm/softmax/inner"].picoseconds, 40)
    self.assertEqual(times.input_wait_ps, 20)
    self.assertEqual(times.background_input_ps, 7)
    result = profile_step.breakdown(times, steps=1)
    categories = {k: v["ms_per_step"] * 1e9
                  for k, v in result["categories"].items()}
    self.assertAlmostEqual(categories[profile_step.SOFTMAX], 40)
    self.assertAlmostEqual(categories[profile_step.CHARACTER_CNN], 30)
    self.assertAlmostEqual(categories[profile_step.INPUT], 20)
    self.assertAlmostEqual(categories[profile_step.OTHER], 10)
    self.assertAlmostEqual(result["attributed_ms_per_step"] * 1e9, 100)
    self.assertEqual(result["other_top_ops"][0]["name"], "outer/call")
    # Per category, the time per op type.
    self.assertEqual(list(result["op_types"][profile_step.SOFTMAX]),
                     ["MatMul"])
    matmul = result["op_types"][profile_step.SOFTMAX]["MatMul"]
    self.assertAlmostEqual(matmul["ms_per_step"] * 1e9, 40)
    self.assertEqual(matmul["calls_per_step"], 1)
    self.assertIn("Conv2D", result["op_types"][profile_step.CHARACTER_CNN])
    self.assertIn("| softmax | 0.0 | 40.0% |",
                  profile_step.markdown_table(result))


class ProfileTinyTest(unittest.TestCase):
  """Two profiled steps of the tiny preset on the toy corpus."""

  def test_categories_cover_the_step(self):
    from elmo_tf import checkpoints as checkpoints_lib
    from elmo_tf import prepare as prepare_lib
    from elmo_tf import trainer as trainer_lib
    from tests import toy_corpus
    tmp = tempfile.mkdtemp()
    paths = toy_corpus.write_corpus(os.path.join(tmp, "text"), n_train=200,
                                    n_heldout=20)
    cache = os.path.join(tmp, "cache")
    corpus = prepare_lib.prepare_cached(paths["spec"], "whitespace",
                                        cache).directory
    config = profile_step.build_config(
        "tiny", "float32", "stream", corpus,
        ["data.batch_size=8", "data.unroll_steps=10"])
    logdir = os.path.join(tmp, "profile")
    with trainer_lib.make_trainer(config, os.path.join(tmp, "run"),
                                  cache_root=cache) as trainer:
      result = profile_step.profile_trainer(trainer, steps=2, warmup=1,
                                            logdir=logdir)
    checkpoints_lib.set_precision("float32")
    self.assertTrue(os.path.exists(result["trace"]))
    self.assertTrue(result["trace"].startswith(
        os.path.join(logdir, "plugins", "profile")))
    categories = result["categories"]
    self.assertEqual(list(categories), list(profile_step.CATEGORIES))
    total = sum(row["ms_per_step"] for row in categories.values())
    self.assertAlmostEqual(total, result["attributed_ms_per_step"], places=6)
    self.assertAlmostEqual(sum(row["percent"] for row in categories.values()),
                           100.0, places=6)
    for category in (profile_step.CHARACTER_CNN, profile_step.LSTM,
                     profile_step.SOFTMAX, profile_step.OPTIMIZER):
      self.assertGreater(categories[category]["ms_per_step"], 0, category)
    # The ops account for most of the wall time of a step, not a sliver.
    self.assertLess(result["attributed_ms_per_step"],
                    2 * 1000 * result["seconds_per_step"])
    # Unscoped gradient sums are placed through the graph, not left over.
    self.assertFalse([op["name"] for op in result["other_top_ops"]
                      if op["type"] == "AddN"])
    self.assertLessEqual(len(result["other_top_ops"]), 10)


if __name__ == "__main__":
  unittest.main()
