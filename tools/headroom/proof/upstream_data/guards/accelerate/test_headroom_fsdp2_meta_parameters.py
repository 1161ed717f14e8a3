# Copyright 2026 The HuggingFace Team. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""
headroom regression guard (tools/headroom/proof/upstream_data/guards/): the behaviour that the retired patch
accelerate/0002 protected (it raised on the collision; accelerate 1.16.0 fixed the mapping itself, keying `meta`
parameters by identity). Runs on both test environments in `make test` and on every new release in `make canary`.

`Accelerator.prepare(model, optimizer)` with FSDP2 and `cpu_ram_efficient_loading` when a rank other than 0 still has
parameters on the `meta` device (e.g. keys missing from a checkpoint). Rank 0's weights are loaded into every rank, so
training must be exact: each rank's optimizer holds each parameter once, and after a few steps every parameter equals
what one process trains from rank 0's weights.

accelerate <= 1.15 mapped the optimizer's parameters to the sharded ones by `data_ptr()`, 0 for every `meta` tensor:
the two `meta` parameters collapsed into one entry and rank 1's optimizer updated one of them twice and the other never.

The distributed part runs this very file with `torchrun` on 2 CPU processes (gloo backend), see `__main__` below.
"""

import json
import os
import sys
import tempfile
import unittest

import torch
from torch import nn

from accelerate.test_utils import execute_subprocess_async


NUM_PROCESSES = 2
META_PARAMETERS = ["first.weight", "second.weight"]
STEPS = 3
LEARNING_RATE = 0.1


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Linear(8, 8)
        self.second = nn.Linear(8, 8)

    def forward(self, x):
        return self.second(torch.tanh(self.first(x)))


def batches():
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(4, 8, generator=generator), torch.randn(4, 8, generator=generator)) for _ in range(STEPS)]


def train(model, optimizer, step=None):
    for inputs, targets in batches():
        loss = nn.functional.mse_loss(model(inputs), targets)
        loss.backward()
        (step or optimizer.step)()
        optimizer.zero_grad()


def single_process_reference():
    torch.manual_seed(0)
    model = Model()
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    train(model, optimizer)
    return {name: param.detach() for name, param in model.named_parameters()}


def run_worker(output_dir):
    import torch.distributed as dist

    from accelerate import Accelerator, FullyShardedDataParallelPlugin
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    fsdp_plugin = FullyShardedDataParallelPlugin(fsdp_version=2, cpu_ram_efficient_loading=True)
    # `cpu=True` sets up a gloo process group (`MULTI_CPU`). FSDP is only turned on with accelerator backends, so we set
    # the distributed type ourselves (on `PartialState` too, `AcceleratorState` re-syncs from it): `prepare` then takes
    # the real FSDP2 path on CPU
    accelerator = Accelerator(cpu=True, fsdp_plugin=fsdp_plugin)
    accelerator.state.fsdp_plugin = fsdp_plugin
    accelerator.state.distributed_type = PartialState().distributed_type = DistributedType.FSDP
    rank = accelerator.process_index

    torch.manual_seed(0)
    model = Model()
    if rank != 0:
        # What `cpu_ram_efficient_loading` leaves on the other ranks for keys missing from a checkpoint
        for name in META_PARAMETERS:
            module_name, param_name = name.rsplit(".", 1)
            module = model.get_submodule(module_name)
            setattr(module, param_name, nn.Parameter(torch.empty_like(getattr(module, param_name), device="meta")))
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    model, optimizer = accelerator.prepare(model, optimizer)

    names = {id(param): name for name, param in model.named_parameters()}
    in_optimizer = [names.get(id(param), "?") for group in optimizer.param_groups for param in group["params"]]
    train(model, optimizer)
    reference = single_process_reference()
    result = {
        "rank": rank,
        "params_missing_from_optimizer": sorted(set(names.values()) - set(in_optimizer)),
        "params_twice_in_optimizer": sorted({n for n in in_optimizer if in_optimizer.count(n) > 1}),
        "max_abs_diff_from_one_process": {
            name: (param.full_tensor() - reference[name]).abs().max().item() for name, param in model.named_parameters()
        },
    }
    with open(os.path.join(output_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    dist.barrier()
    dist.destroy_process_group()
    # Leave without the interpreter's teardown: FSDP2 keeps this process group referenced (its module states and
    # hooks live on), so `destroy_process_group` cannot free the gloo backend, whose threads would then be torn down
    # with the interpreter while the other ranks exit; on a busy machine that aborted rank 1 (`terminate called
    # without an active exception`). Every rank is past the barrier and has written its result.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class FSDP2MetaParametersTrainingTest(unittest.TestCase):
    def test_meta_parameters_train_like_one_process(self):
        with tempfile.TemporaryDirectory() as tmp_dir:
            cmd = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                f"--nproc_per_node={NUM_PROCESSES}",
                # a free port of its own: other jobs on the machine may hold the default one
                "--standalone",
                __file__,
                tmp_dir,
            ]
            # One thread per rank (the reference runs in each rank too): the sums are done in the same order
            execute_subprocess_async(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"})
            results = []
            for rank in range(NUM_PROCESSES):
                with open(os.path.join(tmp_dir, f"rank{rank}.json")) as f:
                    results.append(json.load(f))

        # Each rank's optimizer holds each parameter once (first, on every rank: it tells why training is off)
        for result in results:
            msg = f"rank {result['rank']}"
            self.assertEqual(result["params_twice_in_optimizer"], [], f"{msg}: held twice by the optimizer")
            self.assertEqual(result["params_missing_from_optimizer"], [], f"{msg}: missing from the optimizer")
        for result in results:
            off = {name: diff for name, diff in result["max_abs_diff_from_one_process"].items() if diff > 1e-6}
            self.assertEqual(off, {}, f"rank {result['rank']}: parameters off from one process after {STEPS} steps")


if __name__ == "__main__":
    # Entry point of the processes launched by `FSDP2MetaParametersTrainingTest` (`torchrun ... OUTPUT_DIR`)
    run_worker(sys.argv[1])
