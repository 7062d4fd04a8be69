"""The training run the training benchmarks measure (no flags).

bench/train_bench.py (throughput and MFU) and bench/profile_step.py (where a
step's time goes) build the same run: the real Trainer, PTB, stream batching,
the batch geometry below per preset.
"""

from elmo_tf import config as config_lib

# Batch geometry per preset: cpu_small as trained here; small as the bilm-tf
# reference figure in NOTES (batch 32, unroll 20, 1024 negatives). Other
# presets (tiny, ...) keep DataConfig's defaults.
GEOMETRY = {
    "cpu_fast": {"batch_size": 64, "unroll_steps": 20},
    "cpu_small": {"batch_size": 64, "unroll_steps": 20},
    "small": {"batch_size": 32, "unroll_steps": 20,
              "n_negative_samples": 1024},
}


def experiment_config(preset: str, precision: str = "float32",
                      jit_compile: bool = False, batching: str = "stream",
                      corpus: str = "ptb") -> config_lib.ExperimentConfig:
  """The benchmarked run of `preset` (`name:full`: the exact softmax).

  No evaluation and no step limit: the benchmark calls `train_step` itself.
  """
  name, _, variant = preset.partition(":")
  geometry = dict(GEOMETRY.get(name, {}))
  model = config_lib.preset(name)
  if variant == "full":
    model = model.replace(training_softmax="full")
  elif variant:
    raise ValueError(f"Unknown preset variant {variant!r} (only 'full').")
  if "n_negative_samples" in geometry:
    model = model.replace(n_negative_samples=geometry.pop("n_negative_samples"))
  return config_lib.ExperimentConfig(
      model=model,
      data=config_lib.DataConfig(corpus=corpus, batching=batching, **geometry),
      train=config_lib.TrainConfig(max_steps=10**6, eval_every_steps=0,
                                   mixed_precision=precision,
                                   jit_compile=jit_compile))
