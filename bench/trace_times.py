"""Op self times from a TensorFlow profiler trace (XSpace of host events).

No flags: `bench/profile_step.py` (a training step) and
`bench/profile_export.py` (a SavedModel's embedding) both read their traces
with it.
"""

import dataclasses
import re
from typing import Any

# A TensorFlow op's trace event is named `node_name:OpType`; other host
# events (`ExecutorState::Process`, `train`, ...) do not match.
_OP_EVENT = re.compile(r"^([A-Za-z0-9_.\-/>]+):([A-Za-z_][A-Za-z0-9_]*)$")
# The iterator's wait for the next batch (tf.data's TraceMe in the
# IteratorGetNext kernel).
_GET_NEXT_EVENT = "IteratorGetNextOp::DoCompute"
_INPUT_THREADS = "tf_data"  # Lines of tf.data's background threads.


@dataclasses.dataclass
class OpTime:
  """Self time of one op (node name) over the profiled steps."""
  name: str
  op_type: str
  picoseconds: int = 0
  count: int = 0


@dataclasses.dataclass
class TraceTimes:
  """What `read_trace` takes from an XSpace."""
  step_ops: dict[str, OpTime]  # Ops run by the step (executor threads).
  input_wait_ps: int  # Time in IteratorGetNext waiting for a batch.
  background_input_ps: int  # Ops of tf.data's own threads.


def read_trace(space) -> TraceTimes:
  """Op self times from an XSpace (xplane_pb2.XSpace) of host events."""
  step_ops: dict[str, OpTime] = {}
  input_wait = background = 0
  for plane in space.planes:
    if not plane.name.startswith("/host:"):
      continue
    for line in plane.lines:
      ops, wait = _line_times(line, plane.event_metadata)
      input_wait += wait
      if line.name.startswith(_INPUT_THREADS):
        background += sum(self_ps for _, _, self_ps in ops)
        continue
      for name, op_type, self_ps in ops:
        op = step_ops.setdefault(name, OpTime(name, op_type))
        op.picoseconds += self_ps
        op.count += 1
  return TraceTimes(step_ops, input_wait, background)


def _line_times(line, metadata) -> tuple[list[tuple[str, str, int]], int]:
  """One thread's op events as (name, type, self time), and its input wait.

  Events on a thread nest (a function op runs its body inline): an op's
  time inside an enclosing op is taken out of the enclosing op's.
  """
  events = sorted(((e.offset_ps, e.duration_ps, metadata[e.metadata_id].name)
                   for e in line.events), key=lambda e: (e[0], -e[1]))
  ops, input_wait = [], 0
  stack: list[list[Any]] = []  # Open events: [end, op match or None, self].

  def close():
    _, match, self_ps = stack.pop()
    if match is not None:
      ops.append((*match.groups(), self_ps))

  for offset, duration, name in events:
    while stack and stack[-1][0] <= offset:
      close()
    match = _OP_EVENT.match(name)
    enclosing_op = next((s for s in reversed(stack) if s[1] is not None), None)
    if match is not None and enclosing_op is not None:
      enclosing_op[2] -= duration
    # (On the iterator's own thread; an IteratorGetNext op event around it
    # would count it already.)
    if name == _GET_NEXT_EVENT and enclosing_op is None:
      input_wait += duration
    stack.append([offset + duration, match, duration])
  while stack:
    close()
  return ops, input_wait


def load_xspace(path: str):
  from tensorflow.tsl.profiler.protobuf import xplane_pb2
  space = xplane_pb2.XSpace()
  with open(path, "rb") as f:
    space.ParseFromString(f.read())
  return space
