"""`accelc bench`: accelc side by side with what users would pick instead, timed honestly.

    model + inputs ─► reference outputs (eager, fp32, on the target device)
        │
        ├─ build each system, one after another:   eager │ torch.compile (default, max-autotune,
        │     (time to first output, RSS growth)     │   CUDA graphs on CUDA)
        │                                            │ ONNX Runtime on a plain dynamo export
        │                                            │   (TensorRT provider too on CUDA)
        │                                            │ ONNX Runtime + onnxruntime.transformers
        │                                            │   optimizer on the dynamo and TorchScript exports
        │                                            │ accelc, once per backend
        ├─ check each one's outputs against the reference on rotated seeded inputs
        └─ time them together: warm-up, then interleaved rounds until the time budget is spent
                 ─► BenchResult: median / p90 / min / max, throughput, build time, memory, error

What is measured, precisely:

* **Latency**: wall time of one call, device synchronised, on inputs rotated through the example
  and seeded random variants of it (:func:`accelc.verify.verification_inputs`). Systems run in
  interleaved rounds (:func:`accelc.timing.measure_interleaved`), so a noisy neighbour slows all of
  them alike; min/max show how noisy the machine was. Within a round each system takes a turn of
  about 50 ms whose first call is not counted: ONNX Runtime's and OpenMP's worker threads spin
  after a call and would otherwise slow whichever system runs next. ONNX Runtime gets the same intra-op thread
  count as torch.
* **Build time**: from the model to the first output: export, optimiser, session creation or
  compilation, and the first call (torch.compile compiles there).
* **Memory** on CPU is process RSS, so it is reported as growth: ``build_peak_mb`` is the peak RSS
  above the level before the system was built (the peak counter is reset through
  ``/proc/self/clear_refs``), ``retained_mb`` what the built system still holds (weight copies,
  compiled code, arenas), ``run_peak_mb`` the peak above that level over a few calls (activations,
  workspaces). Memory freed by an earlier system and reused by a later one hides some growth; the
  order of systems is fixed so runs compare with each other. On CUDA the same three numbers come
  from ``torch.cuda.max_memory_allocated`` (torch's allocator), plus ``device_used_mb`` from
  ``torch.cuda.mem_get_info`` which also sees ONNX Runtime's allocations.
* **Error**: the largest absolute (and magnitude-relative) difference from eager fp32 on the target
  device over every input set, and whether it is within accelc's tolerance for the precision.

A system that cannot be built or run is reported with a one-line reason (``failed``,
``skipped`` or ``unavailable``); it never stops the others.
"""

from .memory import OtherLoad
from .results import BenchResult, ProgressBar, SystemResult, format_table
from .run import bench_main, run_bench
from .systems import (
    ACCELC_BACKENDS,
    DEFAULT_SYSTEMS,
    SYSTEM_GROUPS,
    BenchContext,
    Built,
    SystemSkipped,
    SystemUnavailable,
    expand_systems,
)

__all__ = ["run_bench", "format_table", "bench_main", "BenchResult", "SystemResult", "ProgressBar",
           "expand_systems", "SYSTEM_GROUPS", "DEFAULT_SYSTEMS", "ACCELC_BACKENDS", "OtherLoad", "Built",
           "BenchContext", "SystemSkipped", "SystemUnavailable"]
