"""The pretraining loop of the biLM.

`train(config, model_dir)` is the one entry point used by `bin/train`; it
prepares the corpus on first use (`elmo_tf.prepare`), builds the model under
the requested distribution strategy (`elmo_tf.distribution`), restores the
latest checkpoint (so re-running the same command resumes at the same step
and data position) and trains, validating with `elmo_tf.evaluation`.
The layout of `model_dir` and the checkpoints are `elmo_tf.checkpoints`'.

Faults (issue 13):
  - One trainer per directory: the trainer holds `<write_dir>/.lock`
    (`checkpoints.RunDirLock`) from start to end; a second one refuses.
  - Signals: SIGTERM or SIGINT (Ctrl-C) lets the current step finish, then a
    checkpoint is written and `Interrupted` is raised (bin/train exits
    128 + signal: 143 for SIGTERM, 130 for SIGINT); re-running resumes at that
    exact step. A second signal stops at once.
  - Divergence: `DivergenceGuard` stops training, naming the step, before a
    faulty state is checkpointed (rules in config.TrainConfig).
  - Damaged checkpoints: the resume reads the newest intact checkpoint
    (`checkpoints.newest_intact_checkpoint`), skipping damaged ones with a
    warning.
"""

import collections
import contextlib
import dataclasses
import math
import os
import signal
import threading
import time
from typing import Any

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from elmo_tf import checkpoints as checkpoints_lib
from elmo_tf import config as config_lib
from elmo_tf import data as data_lib
from elmo_tf import distribution as distribution_lib
from elmo_tf import evaluation as evaluation_lib
from elmo_tf import optimizers as optimizers_lib
from elmo_tf import prepare as prepare_lib
from elmo_tf import runtime
from elmo_tf import warm_start
from elmo_tf.layers import sampled_softmax as sampled_softmax_lib
from elmo_tf.ops import fused_adagrad

# Kept importable from here, where it used to live.
TrainingError = checkpoints_lib.TrainingError


class Interrupted(Exception):
  """Training stopped on a signal, after checkpointing the last step.

  Attributes:
    signal_number: the signal received (by this process, or by a peer worker
      of a multi_worker run).
    step: the step of `checkpoint`, where a re-run resumes.
    checkpoint: the checkpoint written (or already there) at `step`.
    exit_code: 128 + signal_number, the shell's convention (143 for
      SIGTERM, 130 for SIGINT).
  """

  def __init__(self, signal_number: int, step: int, checkpoint: str):
    self.signal_number = signal_number
    self.step = step
    self.checkpoint = checkpoint
    self.exit_code = 128 + signal_number
    super().__init__(
        f"Stopped by {signal.Signals(signal_number).name} after step {step}; "
        f"saved {checkpoint}. Re-run the same command to resume at step "
        f"{step}.")


class DivergenceGuard:
  """Decides after every step whether training has diverged.

  The rules (thresholds in `config.TrainConfig`, where they are documented):
  a non-finite loss or gradient norm; a loss more than `loss_jump` nats above
  the mean of the previous `window_steps` losses (once that many steps ran in
  this process); a weight larger than `max_weight` in magnitude (or not
  finite). A fired rule is a `TrainingError` raised by the trainer before
  the step is checkpointed, so the checkpoints on disk all precede the
  fault and rotation cannot delete the last one of them.

  Args:
    loss_jump: nats above the running mean that count as exploding; 0: off.
    window_steps: steps in the running mean.
    max_weight: largest allowed |weight|; 0: off.

  Example:
    guard = DivergenceGuard(loss_jump=3.0, window_steps=100, max_weight=1e3)
    problem = guard.check(loss=5.1, grad_norm=2.0, weight_max=1.7)
    # None while healthy, else a sentence saying what went wrong.
  """

  def __init__(self, loss_jump: float, window_steps: int, max_weight: float):
    if loss_jump < 0 or max_weight < 0 or window_steps < 1:
      raise ValueError(
          "Divergence thresholds must be >= 0 and the window >= 1, got "
          f"loss_jump={loss_jump}, window_steps={window_steps}, "
          f"max_weight={max_weight}.")
    self.loss_jump = loss_jump
    self.window_steps = window_steps
    self.max_weight = max_weight
    self._losses = collections.deque(maxlen=window_steps)

  @classmethod
  def from_config(cls, train: config_lib.TrainConfig) -> "DivergenceGuard":
    return cls(loss_jump=train.divergence_loss_jump,
               window_steps=train.divergence_window_steps,
               max_weight=train.divergence_max_weight)

  def check(self, loss: float, grad_norm: float,
            weight_max: float) -> str | None:
    """None if the step looks healthy (its loss joins the window), else
    what is wrong."""
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
      return f"the loss became {loss} (gradient norm {grad_norm})"
    if not math.isfinite(weight_max):
      return f"a weight became {weight_max}"
    if self.max_weight and weight_max > self.max_weight:
      return (f"the largest weight magnitude reached {weight_max:.4g}, above "
              f"divergence_max_weight={self.max_weight:g} (loss {loss:.4g})")
    if self.loss_jump and len(self._losses) == self.window_steps:
      mean = sum(self._losses) / len(self._losses)
      if loss > mean + self.loss_jump:
        return (f"the loss jumped to {loss:.4g}, more than "
                f"divergence_loss_jump={self.loss_jump:g} nats above its mean "
                f"{mean:.4g} over the previous {self.window_steps} steps")
    self._losses.append(loss)
    return None


class _StopSignals:
  """Turns SIGTERM and SIGINT into a flag the training loop reads between
  steps; a second signal stops at once (SIGINT: KeyboardInterrupt).

  Why not `tf.distribute.experimental.PreemptionCheckpointHandler`: tried
  with this trainer's setup (default strategy on CPU, a path-keyed
  `tf.train.Checkpoint` under a `CheckpointManager`), it saves and exits on
  SIGTERM, but (1) it watches SIGTERM only (Ctrl-C still raised
  KeyboardInterrupt mid-step and lost the work); (2) it restores the
  manager's latest checkpoint itself when created, bypassing the
  newest-intact choice of `checkpoints.newest_intact_checkpoint`, and adds a
  `checkpointed_runs` variable to every checkpoint; (3) it names the
  checkpoint by its save counter (ckpt-1 at step 7) unless given a save_fn,
  and the resume reads the step from the name; (4) on GCP CPU VMs it
  declares itself unsupported. A flag read between steps does the job in a few
  lines; multi_worker runs agree on the stopping step by summing the flag
  in the step's collective reduce (see `Trainer._make_train_step`).
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self, enabled: bool = True):
    self.enabled = enabled
    self.received: int | None = None
    self._previous = {}

  def __enter__(self):
    # Handlers can only be set from the main thread; elsewhere (a library
    # user's thread) signals keep their usual effect.
    if self.enabled and threading.current_thread() is threading.main_thread():
      for number in self.SIGNALS:
        self._previous[number] = signal.signal(number, self._handle)
    return self

  def __exit__(self, *exc_info):
    for number, handler in self._previous.items():
      # None: a handler set outside Python; the default is the closest.
      signal.signal(number, signal.SIG_DFL if handler is None else handler)
    self._previous = {}

  def _handle(self, number, frame):
    del frame  # Unused.
    if self.received is None:
      # Only a flag here: the loop logs and saves between steps.
      self.received = number
      return
    if number == signal.SIGINT:
      raise KeyboardInterrupt
    raise SystemExit(128 + number)


class Trainer:
  """Owns the model, optimizer, data iterator and checkpoint of one run.

  Args:
    config: the run's `ExperimentConfig`.
    model_dir: the run directory (`elmo_tf.checkpoints`).
    prepared: the prepared corpus of `config.data`
      (`prepare.ensure_prepared`); `make_trainer` prepares it.

  Example:
    config = ExperimentConfig(model=preset("tiny"), ...)
    make_trainer(config, "/tmp/run").train()
  """

  def __init__(self, config: config_lib.ExperimentConfig, model_dir: str,
               prepared: prepare_lib.PreparedCorpus):
    self.config = config
    self.model_dir = model_dir
    self.strategy = distribution_lib.make_strategy(config.train.distribution)
    self.prepared = prepared
    vocab = self.prepared.vocab
    if (config.model.training_softmax == "sampled"
        and config.model.n_negative_samples >= vocab.size):
      raise TrainingError(
          f"n_negative_samples={config.model.n_negative_samples} must be "
          f"smaller than the vocabulary ({vocab.size} tokens); lower it with "
          "--n_negative_samples, or train with the exact softmax "
          "(--training_softmax=full).")
    self.config = config = dataclasses.replace(
        config, model=config.model.replace(vocab_size=vocab.size))
    self.is_chief = distribution_lib.is_chief(self.strategy)
    self.write_dir = distribution_lib.write_dir(model_dir, self.strategy)
    # Each process locks the directory it writes (non-chief workers their
    # own, see distribution.write_dir) until `close()`.
    self._lock = checkpoints_lib.RunDirLock(self.write_dir)
    self._lock.acquire()
    try:
      self._build(config, vocab)
    except BaseException:
      self._lock.release()
      raise

  def _build(self, config: config_lib.ExperimentConfig, vocab) -> None:
    """The rest of `__init__`, run while holding the lock."""
    self.divergence_guard = DivergenceGuard.from_config(config.train)
    checkpoints_lib.check_or_write_model_dir(config, self.write_dir, vocab)
    checkpoints_lib.set_precision(config.train.mixed_precision)
    runtime.warn_if_bfloat16_is_emulated(config.train.mixed_precision)
    keras.utils.set_random_seed(config.train.seed)
    with self.strategy.scope():
      self.model = checkpoints_lib.build_model(config.model)
      self.optimizer = self._make_optimizer()
      self.optimizer.build(self.model.trainable_variables)
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")

    self.steps_per_epoch = data_lib.steps_per_epoch(
        self.prepared, "train", config.data)
    self.total_steps = config.train.max_steps or (
        config.train.epochs * self.steps_per_epoch)
    # None: the constant rate the optimizer was built with.
    self._learning_rate_schedule = self._make_learning_rate_schedule()
    self._global_batch_size = config.data.batch_size
    self.checkpoint = checkpoints_lib.model_checkpoint(
        self.model,
        optimizer_variables=checkpoints_lib.weights_by_path(self.optimizer),
        step=self.step)
    restored, damaged = checkpoints_lib.newest_intact_checkpoint(
        self.write_dir)
    if damaged and restored:  # (None: an interrupted first save, no list.)
      _forget_checkpoints(self.write_dir, damaged, restored)
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, self.write_dir,
        max_to_keep=config.train.max_checkpoints_to_keep,
        step_counter=self.step,
        checkpoint_interval=None)
    if restored:
      self.checkpoint.restore(restored)
      logging.info("Resumed from %s at step %d.", restored, self.current_step)
      # The optimizer checkpoints its learning rate; the config (flags) of
      # this run decides it, so that --learning_rate can change on resume.
      saved_rate = float(keras.ops.convert_to_numpy(
          self.optimizer.learning_rate))
      rate = self.learning_rate_at(self.current_step)
      # The variable is float32: compare at that precision, or every resume
      # would report a change (0.002 is 0.0020000000949949026 in float32).
      if not math.isclose(saved_rate, rate, rel_tol=1e-6):
        logging.info("Learning rate %g (the checkpoint had %g).", rate,
                     saved_rate)
        self.optimizer.learning_rate.assign(rate)
    elif config.train.init_from:
      # Fine-tuning: step 0 starts from the source's weights (once this run
      # has a checkpoint, it resumes from its own, above).
      source = warm_start.read_source(config.train.init_from)
      warm_start.check_compatible(source, config.model, vocab)
      warm_start.load_weights(source, self.model)
    # The data position is the step: batch k of the (repeated, seeded)
    # training stream is always the same batch, so resuming skips the
    # batches already seen (cheaply: before char ids are computed). This
    # works the same under every distribution strategy, unlike saving the
    # iterator, which distributed iterators do not support.
    self._skip_batches = self.current_step
    self.dataset = self.strategy.distribute_datasets_from_function(
        self._dataset_fn)
    self.iterator = iter(self.dataset)
    # 1.0 when this process received SIGTERM / SIGINT (`train_step`); not
    # checkpointed.
    self._stop_requested = tf.Variable(0.0, trainable=False,
                                       name="stop_requested")
    # Sets `_all_weights_checked`: False when the step's weight_max covers
    # only the rows that sparse updates wrote (`_updated_weights_max`);
    # then the first step in this process also checks every weight, so
    # that together they cover all of them.
    self._train_step = self._make_train_step()
    self._stream_state = None

  @property
  def current_step(self) -> int:
    return int(self.step.numpy())

  def close(self) -> None:
    """Releases the run directory's lock (also done at interpreter exit)."""
    self._lock.release()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()

  # -- construction ---------------------------------------------------------

  def learning_rate_at(self, step: int) -> float:
    """The learning rate of the update after `step` updates."""
    if self._learning_rate_schedule is None:
      return self.config.train.learning_rate
    return float(keras.ops.convert_to_numpy(
        self._learning_rate_schedule(step)))

  def _make_learning_rate_schedule(
      self) -> keras.optimizers.schedules.LearningRateSchedule | None:
    """The decay over `total_steps` (built once), or None if constant."""
    train = self.config.train
    if not 0.0 <= train.final_learning_rate_fraction <= 1.0:
      raise ValueError(
          "final_learning_rate_fraction must be in [0, 1], got "
          f"{train.final_learning_rate_fraction}.")
    if train.learning_rate_schedule == "constant":
      return None
    if train.learning_rate_schedule == "cosine":
      return keras.optimizers.schedules.CosineDecay(
          train.learning_rate, decay_steps=self.total_steps,
          alpha=train.final_learning_rate_fraction)
    if train.learning_rate_schedule == "linear":
      return keras.optimizers.schedules.PolynomialDecay(
          train.learning_rate, decay_steps=self.total_steps,
          end_learning_rate=(train.learning_rate
                             * train.final_learning_rate_fraction),
          power=1.0)
    raise ValueError(
        f"Unknown learning_rate_schedule {train.learning_rate_schedule!r}; "
        f"choose one of {list(config_lib.LEARNING_RATE_SCHEDULES)}.")

  def _make_optimizer(self) -> keras.optimizers.Optimizer:
    train = self.config.train
    if train.optimizer == "adagrad":
      # Keras's Adagrad, but the softmax's and embeddings' IndexedSlices
      # gradients update only their rows (exactly; see optimizers.py): the
      # step costs the same at 10k and 800k words.
      return optimizers_lib.SparseAdagrad(
          learning_rate=train.learning_rate,
          initial_accumulator_value=train.initial_accumulator_value,
          epsilon=1e-10)
    if train.optimizer == "adam":
      # Dense: Adam's moments decay on every row, touched or not, so each
      # step reads and writes the whole softmax and its two slots (a "lazy"
      # Adam that skips untouched rows would be another algorithm). Its
      # step time grows with the vocabulary. FusedAdam: Keras's Adam in one
      # pass per weight (optimizers.py).
      return optimizers_lib.FusedAdam(learning_rate=train.learning_rate)
    if train.optimizer == "sgd":
      return keras.optimizers.SGD(learning_rate=train.learning_rate)
    raise ValueError(f"Unknown optimizer {train.optimizer!r}; choose one of "
                     f"{list(config_lib.OPTIMIZERS)}.")

  def _dataset_fn(self, input_context: tf.distribute.InputContext):
    return data_lib.make_dataset(
        self.prepared, "train", self.config.data, shuffle=True,
        seed=self.config.train.seed, repeat=True, input_context=input_context,
        skip_batches=self._skip_batches)

  def _make_train_step(self):
    model = self.model
    optimizer = self.optimizer
    clip_norm = self.config.train.clip_norm
    n_replicas = self.strategy.num_replicas_in_sync
    stream = self.config.data.batching == "stream"
    # Several replicas sum dense gradients (below): every row is updated.
    rows_only_updates = (n_replicas == 1 and
                         optimizers_lib.updates_only_gradient_rows(optimizer))
    # `train_step` adds a check of every weight on the first step.
    self._all_weights_checked = not rows_only_updates
    gradient_scale = (self.config.train.gradient_loss_scale or
                      float(self.config.data.unroll_steps))

    jit_compile = self.config.train.jit_compile
    if jit_compile:
      self._prepare_for_jit_compile()
    # One replica, Adagrad, no XLA: the clip's factor goes into the
    # optimizer's fused update (elmo_tf/ops/adagrad_kernel.cc), which also
    # returns each dense variable's largest |weight|, instead of a scaled
    # copy of every gradient and two more reads of every weight.
    fused_clip = (n_replicas == 1 and not jit_compile and
                  isinstance(optimizer, optimizers_lib.SparseAdagrad) and
                  fused_adagrad.load() is not None)

    def sampler_seed(replica_id):
      # Negatives drawn from (seed, step, replica): reproducible on resume.
      return tf.stack([tf.constant(self.config.train.seed, tf.int64),
                       self.step * 1024 + tf.cast(replica_id, tf.int64)])

    def replica_step(batch, stop_requested):
      context = tf.distribute.get_replica_context()
      if "sampler_negatives" not in batch:
        batch = dict(batch, sampler_seed=sampler_seed(
            context.replica_id_in_sync_group))
      with tf.GradientTape() as tape:
        outputs = model(batch, training=True)
        # Each replica's gradient is summed across replicas below, so scale
        # the per-replica mean loss by 1 / replicas.
        loss = outputs["loss"] * (gradient_scale / n_replicas)
      variables = model.trainable_variables
      grads = tape.gradient(loss, variables)
      if n_replicas > 1:
        # Dense gradients (embedding and softmax rows arrive as
        # IndexedSlices) so they can be summed and rescaled below. (This
        # makes every update, and the weight check below, touch the whole
        # softmax: with several replicas the step's cost grows with the
        # vocabulary.)
        grads = [tf.convert_to_tensor(g) for g in grads]
        grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
      # A non-finite loss or norm is not masked out of the update here (a
      # tf.where over every gradient cost 2% of the step): the host's
      # divergence guard sees it in this step's metrics and stops training
      # before anything is saved, so the last checkpoint stays good and the
      # poisoned in-memory weights are never used again.
      if fused_clip:
        # tf.clip_by_global_norm's norm and factor (NaN when the norm is
        # not finite), applied inside the update.
        grad_norm = tf.linalg.global_norm(grads)
        clip = tf.constant(clip_norm, tf.float32)
        scale = clip * tf.minimum(1.0 / grad_norm,
                                  tf.constant(1.0, tf.float32) / clip)
        scale += grad_norm - grad_norm
        known_maxima = optimizer.apply_clipped(zip(grads, variables), scale)
      else:
        grads, grad_norm = tf.clip_by_global_norm(grads, clip_norm)
        if n_replicas > 1:
          # The Keras optimizer sums gradients across replicas once more;
          # they are already summed, so divide them back.
          grads = [None if g is None else g / n_replicas for g in grads]
        optimizer.apply_gradients(zip(grads, variables))
        known_maxima = {}
      # Read after the update (automatic control dependencies order the
      # reads after the assignments): the divergence guard's weight rule.
      weight_max = _updated_weights_max(variables, grads, rows_only_updates,
                                        known_maxima)
      metrics = {
          "loss": outputs["loss"],
          "forward_loss": outputs["forward_loss"],
          "backward_loss": outputs["backward_loss"],
          "grad_norm": grad_norm,
          "tokens": outputs["forward_tokens"],
          "weight_max": weight_max,
          # Summed over replicas and workers: > 0 on every worker as soon as
          # one of them received SIGTERM / SIGINT, so that all stop after
          # this same step (a worker stopping alone would leave the others
          # waiting in the next collective).
          "stop_requests": stop_requested,
      }
      states = ((outputs["forward_state"], outputs["backward_state"])
                if stream else None)
      return metrics, states

    model_config = self.config.model
    if jit_compile:
      # XLA compiles the model, loss, gradients and update; reading the
      # iterator and drawing the negatives (their number of draws depends on
      # the data) stay outside, in the enclosing tf.function.
      compiled_replica_step = tf.function(replica_step, jit_compile=True)
    else:
      compiled_replica_step = replica_step

    def step_fn(iterator, states):
      batch = next(iterator)
      stop_requested = self._stop_requested.read_value()
      if stream:
        batch = dict(batch, forward_state=states[0], backward_state=states[1])
      if jit_compile and model_config.training_softmax == "sampled":
        batch = dict(batch, sampler_negatives=(
            sampled_softmax_lib.stateless_log_uniform_unique_draws(
                model_config.n_negative_samples, model_config.vocab_size,
                sampler_seed(0))))
      metrics, new_states = self.strategy.run(compiled_replica_step,
                                              args=(batch, stop_requested))
      reduced = {
          key: self.strategy.reduce(
              tf.distribute.ReduceOp.SUM
              if key in ("tokens", "stop_requests")
              else tf.distribute.ReduceOp.MEAN, value, axis=None)
          for key, value in metrics.items()
      }
      return reduced, new_states

    return tf.function(step_fn, reduce_retracing=True)

  def _prepare_for_jit_compile(self):
    """Checks that XLA can compile the step and makes its shapes static."""
    if self.strategy.num_replicas_in_sync > 1:
      raise ValueError(
          "jit_compile supports one device (--distribution=default); "
          f"this run has {self.strategy.num_replicas_in_sync} replicas.")
    char_encoder = self.model.backbone.char_encoder
    if char_encoder is not None:
      # Both save work by changing shapes with the data (distinct tokens,
      # longest token), which would make XLA recompile every step. Results
      # are the same without them.
      char_encoder.deduplicate = False
      char_encoder.trim_padding = False
      char_encoder.window_max_kernel = False  # custom ops, as below
      char_encoder.highway_kernel = False
    # XLA cannot compile the fused LSTMP kernel (a custom op), nor the packed
    # loop over sentences (shapes that depend on the data).
    backbone = self.model.backbone
    for lstm in backbone.forward_lstms + backbone.backward_lstms:
      lstm.fused_kernel = False
      lstm.pack_sequences = False

  def _initial_stream_state(self):
    per_replica = self._global_batch_size // self.strategy.num_replicas_in_sync
    zeros = self.model.backbone.initial_state(per_replica)
    if self.strategy.num_replicas_in_sync == 1:
      return zeros
    return self.strategy.experimental_distribute_values_from_function(
        lambda _: zeros)

  # -- the loop -------------------------------------------------------------

  def train_step(self, stop_requested: bool = False) -> dict[str, float]:
    """Runs one optimizer step on the next batch; returns its metrics.

    `stop_requested` (this process received a signal) comes back summed
    over all workers in `metrics["stop_requests"]`.

    Raises TrainingError when `divergence_guard` fires (the step is not
    counted and nothing is saved; the update already applied stays in the
    in-memory weights, which are then no longer fit to save or use).
    """
    step = self.current_step
    if self.config.data.batching == "stream":
      if self._stream_state is None or step % self.steps_per_epoch == 0:
        # A new epoch of the stream starts from a zero state.
        self._stream_state = self._initial_stream_state()
    if self._learning_rate_schedule is not None:
      # A variable the compiled step reads: no retracing per step.
      self.optimizer.learning_rate.assign(self.learning_rate_at(step))
    # A variable the compiled step reads (as the learning rate).
    self._stop_requested.assign(1.0 if stop_requested else 0.0)
    metrics, states = self._train_step(self.iterator, self._stream_state)
    if self.config.data.batching == "stream":
      self._stream_state = states
    metrics = {key: float(value) for key, value in metrics.items()}
    if not self._all_weights_checked:
      # np.max, not max(): a NaN on either side propagates.
      metrics["weight_max"] = float(np.max(
          [metrics["weight_max"], float(_all_weights_max(
              self.model.trainable_variables))]))
      self._all_weights_checked = True
    problem = self.divergence_guard.check(
        metrics["loss"], metrics["grad_norm"], metrics["weight_max"])
    if problem:
      latest = self.manager.latest_checkpoint
      kept = (f"the newest checkpoint, {latest}, precedes the fault and is "
              "kept" if latest else "no checkpoint was written yet")
      raise TrainingError(
          f"Training diverged at step {step + 1}: {problem}. Stopped "
          f"without checkpointing it; {kept}. Lower --learning_rate (or "
          "--clip_norm), or check the data; the thresholds are "
          "train.divergence_* (--set).")
    self.step.assign_add(1)
    return metrics

  def train(self, handle_signals: bool = True) -> dict[str, Any]:
    """Trains until `total_steps`; returns the last validation metrics.

    With `handle_signals` (and in the main thread), SIGTERM and SIGINT end
    training after the current step with a checkpoint: `Interrupted` is
    raised.
    """
    train_writer = tf.summary.create_file_writer(
        os.path.join(self.write_dir, checkpoints_lib.TRAIN_LOGDIR))
    valid_writer = tf.summary.create_file_writer(
        os.path.join(self.write_dir, checkpoints_lib.VALIDATION_LOGDIR))
    try:
      with _StopSignals(enabled=handle_signals) as signals:
        return self._train_loop(train_writer, valid_writer, signals)
    finally:
      train_writer.close()
      valid_writer.close()

  def _train_loop(self, train_writer, valid_writer,
                  signals: _StopSignals) -> dict[str, Any]:
    config = self.config.train
    # A multi_worker process stops only when the step's reduce says so,
    # after the same step on every worker; one process stops at once.
    alone = self.config.train.distribution != "multi_worker"
    start_step = self.current_step
    if start_step >= self.total_steps:
      logging.info("Already trained for %d steps (target %d).", start_step,
                   self.total_steps)
    progbar = keras.utils.Progbar(
        self.total_steps, stateful_metrics=["loss", "ppl", "tok/s"],
        verbose=1 if self.is_chief else 0)
    if start_step:
      progbar.update(start_step)
    window_tokens = 0.0
    window_start = time.perf_counter()
    window_losses = []
    last_valid: dict[str, Any] = {}
    while self.current_step < self.total_steps:
      metrics = self.train_step(stop_requested=signals.received is not None)
      step = self.current_step
      window_tokens += metrics["tokens"]
      window_losses.append((metrics["loss"], metrics["forward_loss"],
                            metrics["backward_loss"], metrics["grad_norm"]))
      if step % config.log_every_steps == 0 or step == self.total_steps:
        elapsed = time.perf_counter() - window_start
        means = np.mean(window_losses, axis=0)
        tokens_per_sec = window_tokens / max(elapsed, 1e-9)
        with train_writer.as_default(step=step):
          tf.summary.scalar("loss", means[0])
          tf.summary.scalar("forward_perplexity", _perplexity(means[1]))
          tf.summary.scalar("backward_perplexity", _perplexity(means[2]))
          tf.summary.scalar("average_perplexity", _perplexity(means[0]))
          tf.summary.scalar("gradient_norm", means[3])
          tf.summary.scalar("learning_rate", float(
              keras.ops.convert_to_numpy(self.optimizer.learning_rate)))
          tf.summary.scalar("tokens_per_sec", tokens_per_sec)
        train_writer.flush()
        progbar.update(step, values=[("loss", means[0]),
                                     ("ppl", _perplexity(means[0])),
                                     ("tok/s", tokens_per_sec)])
        window_tokens, window_losses = 0.0, []
        window_start = time.perf_counter()
      if step % config.checkpoint_every_steps == 0:
        self.manager.save(checkpoint_number=step)
      if config.eval_every_steps and step % config.eval_every_steps == 0:
        last_valid = self._validate(valid_writer, step)
        window_start = time.perf_counter()
      if metrics["stop_requests"] > 0 or (alone and signals.received):
        train_writer.flush()
        number = signals.received or signal.SIGTERM  # A peer's, if None.
        logging.warning(
            "%s: stopping after step %d of %d.",
            "Received " + signal.Signals(number).name if signals.received
            else "A peer worker received a signal", step, self.total_steps)
        path = self._save_if_needed()
        interrupted = Interrupted(number, step, path)
        logging.warning("%s", interrupted)
        raise interrupted
    self._save_if_needed()
    if not last_valid or last_valid.get("step") != self.current_step:
      last_valid = self._validate(valid_writer, self.current_step)
    return last_valid

  def _save_if_needed(self) -> str:
    """Checkpoints the current step unless the latest checkpoint is of it;
    returns the checkpoint's path."""
    latest = self.manager.latest_checkpoint
    if latest is None or (self.current_step !=
                          checkpoints_lib.checkpoint_step(latest)):
      latest = self.manager.save(checkpoint_number=self.current_step)
    return latest

  def _validate(self, writer, step: int) -> dict[str, Any]:
    dataset = data_lib.make_dataset(
        self.prepared, "valid", self.config.data, shuffle=False,
        seed=self.config.train.seed)
    results = evaluation_lib.evaluate_model(
        self.model, dataset, self.config.data.batching,
        max_batches=self.config.train.eval_max_batches)
    with writer.as_default(step=step):
      tf.summary.scalar("loss", results["average_loss"])
      for name in ("forward", "backward", "average"):
        tf.summary.scalar(f"{name}_perplexity", results[f"{name}_perplexity"])
    writer.flush()
    logging.info(
        "step %d validation perplexity: forward %.2f backward %.2f "
        "average %.2f", step, results["forward_perplexity"],
        results["backward_perplexity"], results["average_perplexity"])
    results["step"] = step
    return results


def _updated_weights_max(variables, grads, rows_only_updates: bool,
                         known_maxima=None):
  """Largest |weight| the step's update can have changed: () float32.

  With an optimizer that changes only the rows of an IndexedSlices
  gradient (`optimizers.updates_only_gradient_rows`), such a variable is
  read at those rows only (ResourceGather: the softmax's targets and
  negatives, not its (vocab_size + 1, dim) matrix); every other variable is
  read whole. The other rows kept the values an earlier step (or the first
  step's full check, `_all_weights_max`) checked. NaN propagates through
  reduce_max. `known_maxima` ({optimizers.variable_key: () float32}) holds
  the maxima the optimizer's fused update already returned.
  """
  known_maxima = known_maxima or {}
  maxima = []
  for variable, grad in zip(variables, grads):
    key = optimizers_lib.variable_key(variable)
    if key in known_maxima:
      maxima.append(known_maxima[key])
    elif rows_only_updates and isinstance(grad, tf.IndexedSlices):
      rows = tf.gather(variable.value, grad.indices)  # (rows, ...)
      # A zero in front: the max of no rows would be -inf.
      maxima.append(tf.reduce_max(tf.concat(
          [tf.zeros((1,)), tf.reshape(tf.abs(tf.cast(rows, tf.float32)),
                                      [-1])], 0)))
    else:
      maxima.append(_abs_max(variable))
  return tf.reduce_max(tf.stack(maxima))


@tf.function
def _all_weights_max(variables):
  """Largest |weight| of `variables` (NaN if any is NaN): () float32."""
  return tf.reduce_max(tf.stack([_abs_max(v) for v in variables]))


def _abs_max(weights):
  """Largest |weight| of one variable or tensor: () float32 (NaN
  propagates: reduce_max, reduce_min and maximum all return NaN when an
  operand has one).

  max(max w, -min w) reads the weights twice and writes nothing, where
  reduce_max(abs(w)) wrote a copy of every weight each step (about 11 ms
  op time per step at the paper's `small` size).
  """
  weights = tf.cast(weights, tf.float32)
  return tf.maximum(tf.reduce_max(weights), -tf.reduce_min(weights))


_perplexity = evaluation_lib.perplexity


def _forget_checkpoints(directory: str, damaged: list[str],
                        restored: str) -> None:
  """Drops the damaged checkpoints from the directory's checkpoint list and
  makes `restored` its latest, so that the CheckpointManager neither counts
  them for rotation nor reports them as the latest. Their files stay on disk
  (named in the warning) until the run saves that step again."""
  try:
    state = tf.train.get_checkpoint_state(directory)
  except Exception:  # pylint: disable=broad-except
    state = None  # Unreadable: written afresh below.
  paths, stamps = [], []
  if state is not None:
    timed = len(state.all_model_checkpoint_timestamps) == len(
        state.all_model_checkpoint_paths)
    for i, path in enumerate(state.all_model_checkpoint_paths):
      if checkpoints_lib.normalize_path(path) not in damaged:
        paths.append(path)
        if timed:
          stamps.append(state.all_model_checkpoint_timestamps[i])
  if restored not in [checkpoints_lib.normalize_path(p) for p in paths]:
    paths.append(restored)
    stamps = []  # The manager then times them all from now.
  tf.compat.v1.train.update_checkpoint_state(
      directory, restored, all_model_checkpoint_paths=paths,
      all_model_checkpoint_timestamps=stamps or None,
      last_preserved_timestamp=(state.last_preserved_timestamp
                                if state is not None else None))


def make_trainer(config: config_lib.ExperimentConfig, model_dir: str,
                 cache_root: str | None = None) -> Trainer:
  """Prepares the corpus of `config.data` (under `cache_root`, default
  `prepare.default_cache_root()`) and builds the `Trainer` of the run.

  Sizes TensorFlow's intra-op pool first (`TrainConfig.intra_op_threads`;
  a no-op once TensorFlow has started). The run directory is locked first,
  so that a second trainer refuses before spending minutes preparing a
  corpus (multi_worker processes lock the directory each writes, once the
  Trainer knows it).
  """
  runtime.configure_threads(config.train.intra_op_threads)
  early_lock = (contextlib.nullcontext()
                if config.train.distribution == "multi_worker"
                else checkpoints_lib.RunDirLock(model_dir))
  with early_lock:
    prepared = prepare_lib.ensure_prepared(config.data, cache_root)
    return Trainer(config, model_dir, prepared)


def train(config: config_lib.ExperimentConfig, model_dir: str,
          cache_root: str | None = None) -> dict[str, Any]:
  """Trains (or resumes) the run in `model_dir`; returns validation metrics.

  Raises `Interrupted` after checkpointing when stopped by SIGTERM / SIGINT,
  `TrainingError` (its `RunDirInUse` when another trainer holds the
  directory) for faults the user can act on.
  """
  with make_trainer(config, model_dir, cache_root=cache_root) as trainer:
    return trainer.train()
