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
headroom regression guard (tools/headroom/proof/upstream_data/guards/): FSDP `cpu_ram_efficient_loading` on two nodes.

Users run 2 nodes x 8 GPUs; here one job runs as two `torchrun` agents on 127.0.0.1 (`--nnodes=2 --nproc-per-node=2
--node-rank=0|1`, one static rendezvous): 4 CPU ranks, gloo, one thread each. Global rank 2 is node 1's local rank 0.

For a Qwen3-MoE checkpoint (experts fused on load) and a dense Llama, both stored in bfloat16 and loaded in float32,
every rank records the rise of its anonymous memory through `from_pretrained` and through `prepare`, its node and
local rank, and how many of its parameters stay on `meta`. Then Accelerate's FSDP2 `prepare` (with
`cpu_ram_efficient_loading`) and 3 SGD steps must give every rank exactly what one process gets, on two layouts:
FSDP (one shard group of 4 ranks) and HSDP (2 replicas x 2 shards, the layout of `ParallelismConfig(dp_replicate_size=2,
dp_shard_size=2)`).

Accelerate sends every weight from global rank 0 in `prepare`. To check that no other rank's loaded copy is used, every
rank but global rank 0 overwrites the parameters it loaded with NaN right after `from_pretrained`: training must still
be exact. This holds on the official release and on the patched build (where most ranks load nothing).

The guard asserts exactness and prints the per-rank and per-node memory figures. The worker (`__main__`) writes one
JSON per rank and layout; `launch_two_nodes` and `per_node` are meant to be reused by a caller that aggregates them.
"""

import contextlib
import ctypes
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from transformers import is_torch_available
from transformers.testing_utils import TestCasePlus, require_accelerate, require_torch


if is_torch_available():
    import torch
    from test_headroom_fsdp_cpu_ram_efficient_loading import leave_fsdp2_worker, write_rank_result

    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM


NNODES = 2
NPROC_PER_NODE = 2
WORLD_SIZE = NNODES * NPROC_PER_NODE
LAYOUTS = ("fsdp", "hsdp")
LEARNING_RATE = 0.1
TRAINING_STEPS = 3
MAX_ABS_DIFF = 1e-5
LAUNCH_TIMEOUT_S = 300

# name: (model class, config); both stored in bfloat16 and loaded in float32 (a cast, and for the MoE a fusion of its
# experts, so that a rank that loads commits the whole model)
MODELS = {
    # ~26 MiB in float32
    "moe": ("Qwen3MoeForCausalLM", {"hidden_size": 128, "moe_intermediate_size": 128, "num_hidden_layers": 8,
                                    "num_experts": 16}),
    # ~28 MiB in float32
    "dense": ("LlamaForCausalLM", {"vocab_size": 8192, "hidden_size": 256, "intermediate_size": 768,
                                   "num_hidden_layers": 4}),
}
STORED_DTYPE = "bfloat16"


def model_class(class_name):
    return {"Qwen3MoeForCausalLM": Qwen3MoeForCausalLM, "LlamaForCausalLM": LlamaForCausalLM}[class_name]


def model_config(class_name, **kwargs):
    if class_name == "Qwen3MoeForCausalLM":
        config = {"vocab_size": 1024, "hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32,
                  "num_hidden_layers": 2, "num_experts": 4, "num_experts_per_tok": 2}
        config.update(kwargs)
        return Qwen3MoeConfig(num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=False,
                              **config)
    config = {"vocab_size": 1024, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
    config.update(kwargs)
    return LlamaConfig(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False, **config)


def save_checkpoints(tmp_dir):
    """The measured checkpoints, and a tiny one of each class for the warm-up."""
    for name, (class_name, config_kwargs) in MODELS.items():
        for path, kwargs in ((name, config_kwargs), (f"{name}-tiny", {})):
            torch.manual_seed(0)
            model = model_class(class_name)(model_config(class_name, **kwargs))
            model.to(getattr(torch, STORED_DTYPE)).save_pretrained(os.path.join(tmp_dir, path))


def get_input_ids(vocab_size):
    return torch.arange(32).view(2, 16) * 31 % vocab_size


def train(model, optimizer, backward, vocab_size):
    input_ids = get_input_ids(vocab_size)
    losses = []
    for _ in range(TRAINING_STEPS):
        loss = model(input_ids=input_ids, labels=input_ids).loss
        backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


@contextlib.contextmanager
def one_thread():
    """The single process reference runs on one thread, like each rank (`OMP_NUM_THREADS=1`), so both sum in the same
    order."""
    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(num_threads)


def save_references(tmp_dir):
    """One process, float32: the weights after loading and after `TRAINING_STEPS` SGD steps."""
    for name, (class_name, _) in MODELS.items():
        model = model_class(class_name).from_pretrained(os.path.join(tmp_dir, name), dtype=torch.float32)
        initial = {n: p.detach().clone() for n, p in model.named_parameters()}
        optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
        with one_thread():
            losses = train(model, optimizer, lambda loss: loss.backward(), model.config.vocab_size)
        trained = {n: p.detach().clone() for n, p in model.named_parameters()}
        torch.save({"initial": initial, "trained": trained, "losses": losses},
                   os.path.join(tmp_dir, f"{name}-reference.pt"))


# ---------------------------------------------------------------------------------------------------------------------
# Memory sampling (anonymous memory: without the file-backed pages of a memory-mapped checkpoint)


def rss_anon_kib():
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise RuntimeError("RssAnon not found in /proc/self/status")


def settle():
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakSampler:
    """Samples RssAnon every millisecond: the peak of a step, not only what it keeps."""

    def __enter__(self):
        settle()
        self.before = self.peak = rss_anon_kib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, rss_anon_kib())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_anon_kib())
        self.peak_rise_mib = (self.peak - self.before) / 1024


# ---------------------------------------------------------------------------------------------------------------------
# The worker: one rank of the two-node job


def get_fsdp2_accelerator():
    from accelerate import Accelerator, FullyShardedDataParallelPlugin
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    fsdp_plugin = FullyShardedDataParallelPlugin(fsdp_version=2, cpu_ram_efficient_loading=True)
    # `cpu=True` makes Accelerate set up a gloo process group (`MULTI_CPU`). Accelerate only switches to FSDP on top of
    # accelerator backends, so we set the distributed type ourselves, on `PartialState` as well like
    # `AcceleratorState.__init__` does. `prepare` then takes the real FSDP2 path on CPU.
    accelerator = Accelerator(cpu=True, fsdp_plugin=fsdp_plugin)
    accelerator.state.fsdp_plugin = fsdp_plugin
    accelerator.state.distributed_type = PartialState().distributed_type = DistributedType.FSDP
    return accelerator


def use_hsdp_layout(accelerator):
    """2 replicas x 2 shards. Accelerate refuses a `ParallelismConfig` on `MULTI_CPU` (`Accelerator(...)` validates it
    against the distributed type before we can set FSDP), so we set the state up as `Accelerator.__init__` does on GPUs:
    the config, its device mesh (`build_device_mesh`: `init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp_replicate",
    "dp_shard"))` plus the flattened `dp_shard_cp`, `dp`, `dp_cp`), then its checks. `fsdp2_prepare_model` then calls
    `fully_shard(..., mesh=mesh[("dp_replicate", "dp_shard_cp")])`, i.e. HSDP."""
    from accelerate.parallelism_config import ParallelismConfig

    parallelism_config = ParallelismConfig(dp_replicate_size=NNODES, dp_shard_size=NPROC_PER_NODE)
    accelerator.state.parallelism_config = parallelism_config
    accelerator.state.device_mesh = parallelism_config.get_device_mesh("cpu")
    parallelism_config._validate_accelerator(accelerator)
    return accelerator.state.device_mesh


def local_numel(param):
    return param.to_local().numel() if hasattr(param, "to_local") else param.numel()


def run_worker(layouts, tmp_dir, output_dir):
    import torch.distributed as dist

    from transformers.distributed.utils import is_local_dist_rank_0
    from transformers.integrations import is_fsdp_enabled

    accelerator = get_fsdp2_accelerator()
    rank = accelerator.process_index
    identity = {
        "rank": rank,
        "local_rank": int(os.environ["LOCAL_RANK"]),
        "node": int(os.environ["GROUP_RANK"]),
        "world_size": accelerator.num_processes,
        "fsdp_enabled": is_fsdp_enabled(),
        "local_dist_rank_0": is_local_dist_rank_0(),
    }
    # Warm-up: imports and first-time allocations of each class are not measured
    for name, (class_name, _) in MODELS.items():
        model_class(class_name).from_pretrained(os.path.join(tmp_dir, f"{name}-tiny"), dtype=torch.float32)
    for layout in layouts.split(","):
        mesh = use_hsdp_layout(accelerator) if layout == "hsdp" else None
        result = {**identity, "layout": layout, "mesh": None if mesh is None else mesh.mesh.tolist()}
        for name, (class_name, _) in MODELS.items():
            settle()
            dist.barrier()
            with PeakSampler() as loading:
                model = model_class(class_name).from_pretrained(os.path.join(tmp_dir, name), dtype=torch.float32)
            params = dict(model.named_parameters())
            loaded = [n for n, p in params.items() if not p.is_meta]
            # Nothing but global rank 0's weights may be used: poison every other rank's loaded copy
            if rank != 0:
                for param_name in loaded:
                    params[param_name].data = torch.full_like(params[param_name], float("nan"))
            optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
            settle()
            dist.barrier()
            with PeakSampler() as preparing:
                model, optimizer = accelerator.prepare(model, optimizer)
            reference = torch.load(os.path.join(tmp_dir, f"{name}-reference.pt"))
            prepared = {n: p.full_tensor() for n, p in model.named_parameters()}
            losses = train(model, optimizer, accelerator.backward, model.config.vocab_size)
            trained = {n: p.full_tensor() for n, p in model.named_parameters()}
            result[name] = {
                "model_mib": sum(p.numel() * p.element_size() for p in params.values()) / 2**20,
                "from_pretrained_peak_rise_mib": loading.peak_rise_mib,
                "prepare_peak_rise_mib": preparing.peak_rise_mib,
                "shard_mib": sum(local_numel(p) * p.element_size() for p in model.parameters()) / 2**20,
                "meta_params": len(params) - len(loaded),
                "num_params": len(params),
                "placements": sorted({str(getattr(p, "placements", None)) for p in model.parameters()}),
                "not_equal_after_prepare": [
                    n for n, v in reference["initial"].items() if not torch.equal(prepared[n], v)
                ],
                "losses": losses,
                "reference_losses": reference["losses"],
                "trained_max_abs_diff": max(
                    (trained[n] - v).abs().max().item() for n, v in reference["trained"].items()
                ),
            }
            del model, optimizer, params, prepared, trained
            accelerator.free_memory()
        write_rank_result(output_dir, layout, rank, result)
    leave_fsdp2_worker()


# ---------------------------------------------------------------------------------------------------------------------
# The launcher: two torchrun agents on 127.0.0.1, and the per-node aggregation


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two_nodes(script, args, env, log_dir, timeout=LAUNCH_TIMEOUT_S):
    """Runs `script args` as one job of `NNODES` torchrun agents x `NPROC_PER_NODE` ranks on 127.0.0.1 (static
    rendezvous on a free port). Waits for both agents; on a failure or a timeout, kills both (their whole process
    groups) and raises with the tail of each agent's log."""
    port = free_port()
    agents = []
    try:
        for node_rank in range(NNODES):
            cmd = [
                sys.executable, "-m", "torch.distributed.run",
                f"--nnodes={NNODES}", f"--nproc-per-node={NPROC_PER_NODE}", f"--node-rank={node_rank}",
                "--master-addr=127.0.0.1", f"--master-port={port}",
                script, *args,
            ]  # fmt: skip
            log = open(os.path.join(log_dir, f"node{node_rank}.log"), "w", encoding="utf-8")
            agents.append((subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True), log))
        deadline = time.monotonic() + timeout
        while any(agent.poll() is None for agent, _ in agents):
            if time.monotonic() > deadline or any(agent.poll() not in (None, 0) for agent, _ in agents):
                break
            time.sleep(0.2)
    finally:
        for agent, log in agents:
            if agent.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(agent.pid, signal.SIGKILL)
                agent.wait()
            log.close()
    failed = [(node, agent.returncode) for node, (agent, _) in enumerate(agents) if agent.returncode != 0]
    if failed:
        tails = []
        for node, _ in failed:
            with open(os.path.join(log_dir, f"node{node}.log"), encoding="utf-8") as f:
                tails.append(f"--- node {node} ---\n" + "".join(f.readlines()[-40:]))
        raise RuntimeError(f"two-node job failed (node, exit code): {failed}\n" + "\n".join(tails))


def read_rank_results(output_dir, layout):
    results = []
    for rank in range(WORLD_SIZE):
        with open(os.path.join(output_dir, f"{layout}_rank{rank}.json"), encoding="utf-8") as f:
            results.append(json.load(f))
    return results


def per_node(results, name, key):
    """Sum over the ranks of each node of `result[name][key]` (peaks of different ranks need not coincide: an upper
    bound of the node's peak)."""
    totals = [0.0] * NNODES
    for result in results:
        totals[result["node"]] += result[name][key]
    return totals


def two_node_env(env):
    env = dict(env)
    # What `accelerate launch --use_fsdp --fsdp_cpu_ram_efficient_loading true` sets
    env["ACCELERATE_USE_FSDP"] = "true"
    env["FSDP_CPU_RAM_EFFICIENT_LOADING"] = "true"
    # One thread per rank, like the single process reference
    env["OMP_NUM_THREADS"] = "1"
    return env


@require_torch
@require_accelerate
class FSDPTwoNodesTest(TestCasePlus):
    def test_two_nodes_training_matches_single_process(self):
        """FSDP and HSDP over 2 nodes x 2 ranks: every rank trains to exactly what one process gets, though every rank
        but global rank 0 poisoned the weights it loaded."""
        if not os.path.exists("/proc/self/status"):
            self.skipTest("needs /proc/self/status")
        tmp_dir = self.get_auto_remove_tmp_dir()
        save_checkpoints(tmp_dir)
        save_references(tmp_dir)

        launch_two_nodes(
            self.test_file_path_str, ["worker", ",".join(LAYOUTS), tmp_dir, tmp_dir], two_node_env(self.get_env()),
            tmp_dir,
        )

        for layout in LAYOUTS:
            results = read_rank_results(tmp_dir, layout)
            for name in MODELS:
                print(f"\n{layout} {name} (model {results[0][name]['model_mib']:.1f} MiB in float32)")
                for r in results:
                    o = r[name]
                    print(
                        f"  rank {r['rank']} node {r['node']} local_rank {r['local_rank']}: meta params "
                        f"{o['meta_params']}/{o['num_params']}, RssAnon peak rise from_pretrained "
                        f"{o['from_pretrained_peak_rise_mib']:.1f} MiB, prepare {o['prepare_peak_rise_mib']:.1f} MiB "
                        f"(shard {o['shard_mib']:.1f} MiB); max abs diff after {TRAINING_STEPS} steps "
                        f"{o['trained_max_abs_diff']:.2e}"
                    )
                for node, (loading, preparing) in enumerate(
                    zip(per_node(results, name, "from_pretrained_peak_rise_mib"),
                        per_node(results, name, "prepare_peak_rise_mib"))
                ):
                    print(f"  node {node} (sum of its ranks): from_pretrained {loading:.1f} MiB, prepare "
                          f"{preparing:.1f} MiB")

        for layout in LAYOUTS:
            for r in read_rank_results(tmp_dir, layout):
                msg = f"{layout}, rank {r['rank']}"
                self.assertEqual(r["world_size"], WORLD_SIZE, msg)
                self.assertTrue(r["fsdp_enabled"], msg)
                self.assertEqual((r["node"], r["local_rank"]), divmod(r["rank"], NPROC_PER_NODE), msg)
                self.assertEqual(r["local_dist_rank_0"], r["local_rank"] == 0, msg)
                if layout == "hsdp":
                    self.assertEqual(r["mesh"], [[0, 1], [2, 3]], msg)
                for name in MODELS:
                    o = r[name]
                    expected = "(Replicate(), Shard(dim=0))" if layout == "hsdp" else "(Shard(dim=0),)"
                    self.assertEqual(o["placements"], [expected], f"{msg}, {name}")
                    self.assertEqual(o["not_equal_after_prepare"], [], f"{msg}, {name}")
                    self.assertLess(o["trained_max_abs_diff"], MAX_ABS_DIFF, f"{msg}, {name}")


if __name__ == "__main__":
    # Entry point of the ranks launched by `launch_two_nodes`: worker <layouts> <checkpoint dir> <output dir>
    workers = {"worker": run_worker}
    workers[sys.argv[1]](*sys.argv[2:])
