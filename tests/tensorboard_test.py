"""Starts TensorBoard on a tiny run's logs and reads the scalars over HTTP."""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

from elmo_tf import config as config_lib
from elmo_tf import trainer as trainer_lib
from tests import toy_corpus


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _get_json(url: str):
  with urllib.request.urlopen(url, timeout=10) as response:
    return json.loads(response.read().decode("utf-8"))


class TensorBoardTest(unittest.TestCase):

  def test_loss_scalars_are_served(self):
    tmp = tempfile.mkdtemp()
    paths = toy_corpus.write_corpus(os.path.join(tmp, "text"), n_train=200)
    model_dir = os.path.join(tmp, "run")
    config = config_lib.ExperimentConfig(
        model=config_lib.preset("tiny"),
        data=config_lib.DataConfig(corpus=paths["spec"], batch_size=8),
        train=config_lib.TrainConfig(max_steps=30, log_every_steps=10,
                                     eval_every_steps=0))
    trainer_lib.train(config, model_dir, cache_root=os.path.join(tmp, "cache"))

    port = _free_port()
    tensorboard = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", model_dir,
         "--host", "127.0.0.1", "--port", str(port), "--load_fast=false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
      base = f"http://127.0.0.1:{port}"
      query = urllib.parse.urlencode({"tag": "loss", "run": "train"})
      deadline = time.time() + 90
      scalars = None
      while time.time() < deadline:
        self.assertIsNone(tensorboard.poll(), "TensorBoard exited early")
        try:
          scalars = _get_json(f"{base}/data/plugin/scalars/scalars?{query}")
          if len(scalars) >= 3:
            break
        except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
          pass
        time.sleep(1)
      self.assertIsNotNone(scalars, "TensorBoard never answered")
      # Rows are [wall_time, step, value]: logged at steps 10, 20, 30.
      self.assertEqual([row[1] for row in scalars], [10, 20, 30])
      for _, _, value in scalars:
        self.assertGreater(value, 0.0)
        self.assertLess(value, 20.0)
      tags = _get_json(f"{base}/data/plugin/scalars/tags")
      self.assertIn("tokens_per_sec", tags["train"])
      self.assertIn("gradient_norm", tags["train"])
      self.assertIn("average_perplexity", tags["validation"])
    finally:
      tensorboard.terminate()
      tensorboard.wait(timeout=30)


if __name__ == "__main__":
  unittest.main()
