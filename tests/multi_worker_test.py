"""Two worker processes on 127.0.0.1 train with MultiWorkerMirroredStrategy."""

import json
import os
import socket
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import tensorflow as tf

from elmo_tf import prepare as prepare_lib
from tests import toy_corpus

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_ports(n: int) -> list[int]:
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def _checkpoint_values(path: str) -> dict[str, np.ndarray]:
  reader = tf.train.load_checkpoint(path)
  return {name: reader.get_tensor(name)
          for name in reader.get_variable_to_shape_map()
          if name.startswith("model_variables/")}


class MultiWorkerTest(unittest.TestCase):

  def test_two_workers_end_with_identical_weights(self):
    tmp = tempfile.mkdtemp()
    paths = toy_corpus.write_corpus(os.path.join(tmp, "text"), n_train=300)
    cache = os.path.join(tmp, "cache")
    # Prepared once up front so the workers do not race to prepare it.
    corpus = prepare_lib.prepare_cached(paths["spec"], "whitespace",
                                         cache).directory
    model_dir = os.path.join(tmp, "run")
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    workers = []
    for index in range(2):
      env = dict(os.environ)
      env["TF_CONFIG"] = json.dumps(
          {"cluster": cluster, "task": {"type": "worker", "index": index}})
      env["CUDA_VISIBLE_DEVICES"] = ""
      workers.append(subprocess.Popen(
          [sys.executable, "-m", "bin.train", f"--corpus={corpus}",
           f"--model_dir={model_dir}", "--preset=tiny", "--max_steps=6",
           "--batch_size=8", "--distribution=multi_worker",
           "--log_every_steps=2", "--checkpoint_every_steps=3",
           "--eval_every_steps=0", f"--cache_dir={cache}",
           "--set=train.eval_max_batches=2"],
          cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT, text=True))
    outputs = []
    for worker in workers:
      try:
        out, _ = worker.communicate(timeout=420)
      except subprocess.TimeoutExpired:
        for w in workers:
          w.kill()
        raise
      outputs.append(out)
    for worker, out in zip(workers, outputs):
      self.assertEqual(worker.returncode, 0, out[-3000:])

    chief = tf.train.latest_checkpoint(model_dir)
    other = tf.train.latest_checkpoint(
        os.path.join(model_dir, "workers", "worker_1"))
    self.assertTrue(chief.endswith("-6"), chief)
    self.assertTrue(other.endswith("-6"), other)
    chief_values = _checkpoint_values(chief)
    other_values = _checkpoint_values(other)
    self.assertGreater(len(chief_values), 5)
    self.assertEqual(sorted(chief_values), sorted(other_values))
    for name, value in chief_values.items():
      np.testing.assert_array_equal(value, other_values[name], err_msg=name)
    # And they did train: step 6 differs from step 3.
    earlier = _checkpoint_values(chief[:-2] + "-3")
    changed = [name for name in chief_values
               if not np.array_equal(chief_values[name], earlier[name])]
    self.assertTrue(changed)


if __name__ == "__main__":
  unittest.main()
