"""Multi-process start-up: `jax.distributed.initialize` from t5x/train.py-style flags.

Flags (the names t5x/train.py uses for multi-host runs without a TPU runtime):

    --multiprocess=auto|yes|no       auto: initialize when --coordinator_address is given or
                                     a pod/cluster environment is detected (TPU pod slices,
                                     JAX_COORDINATOR_ADDRESS, ...)
    --coordinator_address=HOST:PORT  process 0's address (all processes pass the same one)
    --process_count=N                number of processes
    --process_index=I                this process, 0 .. N-1

On a TPU pod slice `jax.distributed.initialize()` finds all three by itself (pass none of
them). On CPU (tests, `launch/local_2proc.sh`) the processes join one mesh through gloo
collectives (`jax_cpu_collectives_implementation='gloo'`), each with its own emulated
devices (`--xla_force_host_platform_device_count`). This must run before any other jax
call that touches a backend (the CLIs call it right after parsing flags).
"""

from __future__ import annotations

import logging
import os
from typing import Optional

from .. import _moved
import jax

logger = logging.getLogger("xprompt_jax")

CLUSTER_ENV_VARS = ("JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES",
                    "MEGASCALE_COORDINATOR_ADDRESS")
MODES = ("auto", "yes", "no")


def define_flags(flags) -> None:
    """Defines --multiprocess, --coordinator_address, --process_count, --process_index
    (absl `flags` module) unless already defined."""
    FLAGS = flags.FLAGS
    if "multiprocess" not in FLAGS:
        flags.DEFINE_enum("multiprocess", "auto", list(MODES),
                          "call jax.distributed.initialize(): 'auto' (when --coordinator_address"
                          " is given or on TPU pods / when cluster env vars are set), 'yes', 'no'")
    if "coordinator_address" not in FLAGS:
        flags.DEFINE_string("coordinator_address", None,
                            "multi-process: HOST:PORT of process 0 (t5x/train.py's flag)")
        flags.DEFINE_integer("process_count", None, "multi-process: number of processes")
        flags.DEFINE_integer("process_index", None, "multi-process: index of this process")


def _use_gloo() -> None:
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except (AttributeError, KeyError, ValueError) as err:  # older / newer jax without it
        logger.warning("could not select gloo CPU collectives: %s", err)


def initialize(mode: str = "auto", coordinator_address: Optional[str] = None,
               process_count: Optional[int] = None, process_index: Optional[int] = None) -> bool:
    """Calls `jax.distributed.initialize` when asked for; returns whether it did."""
    if mode not in MODES:
        raise ValueError(f"--multiprocess={mode!r}; expected one of {list(MODES)}")
    explicit = [coordinator_address, process_count, process_index]
    if any(v is not None for v in explicit) and any(v is None for v in explicit):
        raise ValueError("--coordinator_address, --process_count and --process_index go "
                         f"together; got coordinator_address={coordinator_address!r}, "
                         f"process_count={process_count}, process_index={process_index}")
    if coordinator_address is not None:
        if mode == "no":
            raise ValueError("--multiprocess=no contradicts --coordinator_address="
                             f"{coordinator_address!r}")
        if process_count < 1 or not 0 <= process_index < process_count:
            raise ValueError(f"--process_index={process_index} is not in [0, "
                             f"--process_count={process_count})")
    elif mode == "no" or (mode == "auto" and not any(os.environ.get(k) for k in CLUSTER_ENV_VARS)):
        return False
    _use_gloo()  # only affects the CPU backend; harmless on TPU/GPU
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=process_count, process_id=process_index)
    logger.info("jax.distributed: process %d of %d, %d local / %d global devices",
                jax.process_index(), jax.process_count(), jax.local_device_count(),
                jax.device_count())
    return True


def initialize_from_flags(FLAGS) -> bool:
    """`initialize` with the values of the flags `define_flags` defined."""
    return initialize(FLAGS.multiprocess, FLAGS.coordinator_address, FLAGS.process_count,
                      FLAGS.process_index)



# Names that moved elsewhere: an import names their new home.
__getattr__ = _moved.module_getattr(__name__)
