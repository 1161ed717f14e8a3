"""How an FSDP `cpu_ram_efficient_loading` job ends when global rank 0 fails while loading (issue 36, part 2).

One job: `from_pretrained` of a small Qwen3-MoE (stored in bfloat16, loaded in float32: a cast and an expert fusion,
so the patched build's other ranks read no weight), an FSDP2 Accelerator on CPU (gloo) built as the two-node guard
builds it (`tools/headroom/proof/upstream_data/guards/transformers/test_headroom_fsdp_two_nodes.py`), `prepare`, one
SGD step. A fault is injected while loading:

  none     no fault (the control: how long a healthy job takes)
  kill     global rank 0 is SIGKILLed on its first weight read, 2 s into it (the OOM killer, a preempted host)
  data     an I/O error (EIO) on the 3rd weight read of every process that reads weights: a bad block in the
           checkpoint's data region. Whoever reads the data hits it: on the official build every rank, on the
           patched build global rank 0 alone (the others read only the safetensors header)
  convert  the expert-fusion converter (`MergeModulelist`) raises on global rank 0 only, on both builds: the loader
           records it and `from_pretrained` raises `RuntimeError(... automatic conversion ...)` after its report

A case may end in `+deaf` (`kill+deaf`, `data+deaf`): the other ranks then do not notice rank 0's death in a
collective (gloo's `Connection closed by peer` is swallowed and they wait), as on NCCL, where a rank blocked in a
collective whose peer died waits for the watchdog's timeout. What ends the job then is torchrun alone. A further
`+share` (`data+deaf+share`) applies the fix proposed in README.md around `from_pretrained`: every rank learns rank
0's loading outcome.

Layouts: 1 agent x 2 ranks and 2 agents x 2 ranks on 127.0.0.1, each with torchrun's `static` and `c10d`
rendezvous; `2x2-c10dx` is `2x2-c10d` with the rendezvous store hosted by the agent without global rank 0
(`--rdzv-conf=is_host=0|1`). Every run is bounded (`--timeout`, 180 s): at the deadline every live worker dumps its Python stack
(SIGUSR1, faulthandler) and everything is SIGKILLed; such a run is a HANG.

  python rank0_failures.py run --out DIR [--envs pristine,patched] [--cases ...] [--layouts ...] [--timeout 180]
  python rank0_failures.py worker CHECKPOINT EVENTS_DIR       (what torchrun starts; not for direct use)

`run` uses `build/envs/<env>/bin/python` of this checkout and writes DIR/results.json, DIR/table.md and, per run,
DIR/runs/<env>-<case>-<layout>/ (each agent's log, each rank's events and stack dumps); the checkpoint goes to
`--work` (build/rank0-failures/).
"""

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


CASES = ("none", "kill", "data", "convert")
LAYOUTS = ("1x2-static", "1x2-c10d", "2x2-static", "2x2-c10d", "2x2-c10dx")
ROOT = Path(__file__).resolve().parents[2]
KILL_DELAY_S = 2.0
FAULTY_READ = 3


# ---------------------------------------------------------------------------------------------------------------------
# The worker: one rank


def event(events_dir, name, **fields):
    """Appends one line to this rank's events (flushed at once: a rank may be killed right after)."""
    rank = os.environ.get("RANK", "?")
    record = {"t": time.time(), "event": name, "rank": int(rank), "pid": os.getpid(),
              "node": int(os.environ.get("GROUP_RANK", "-1")), "local_rank": int(os.environ.get("LOCAL_RANK", "-1")),
              **fields}
    with open(os.path.join(events_dir, f"rank{rank}.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def inject(case, events_dir):
    """Installs the fault of `case` in this process (before any loading)."""
    import transformers.core_model_loading as cml

    rank = int(os.environ["RANK"])
    reads = {"n": 0}
    materialize_copy = cml._materialize_copy

    if case == "kill" and rank == 0:
        def _materialize_copy(tensor, device=None, dtype=None):
            reads["n"] += 1
            if reads["n"] == 1:
                time.sleep(KILL_DELAY_S)
                event(events_dir, "fault", kind="SIGKILL")
                os.kill(os.getpid(), signal.SIGKILL)
            return materialize_copy(tensor, device, dtype)
        cml._materialize_copy = _materialize_copy
    elif case == "data":
        def _materialize_copy(tensor, device=None, dtype=None):
            if getattr(tensor, "is_meta", False):  # a meta tensor holds no data: nothing is read from the disk
                return materialize_copy(tensor, device, dtype)
            reads["n"] += 1
            if reads["n"] == FAULTY_READ:
                event(events_dir, "fault", kind="EIO")
                raise OSError(5, "Input/output error (injected: a bad block in the checkpoint's data region)")
            return materialize_copy(tensor, device, dtype)
        cml._materialize_copy = _materialize_copy
    elif case == "convert" and rank == 0:
        convert = cml.MergeModulelist.convert

        def merge_convert(self, *args, **kwargs):
            event(events_dir, "fault", kind="converter")
            raise ValueError("injected: the expert fusion failed on this rank's data")
        cml.MergeModulelist.convert = merge_convert
        assert convert is not None


def deafen(events_dir):
    """What a rank does on NCCL when its peer dies in the middle of a collective: it does not notice. gloo raises
    `Connection closed by peer` at once; here the rank then waits instead, like an NCCL kernel that spins until the
    process group's watchdog times out (10 min by default). The launcher alone can then end the job."""
    import torch.distributed as dist

    for name in ("broadcast", "scatter", "barrier", "all_reduce", "all_gather_into_tensor", "reduce_scatter_tensor"):
        collective = getattr(dist, name)

        def deaf(*args, _collective=collective, _name=name, **kwargs):
            try:
                return _collective(*args, **kwargs)
            except RuntimeError as e:
                if "Connection closed by peer" not in str(e) and "Connection reset" not in str(e):
                    raise
                event(events_dir, "peer_lost", collective=_name)
                time.sleep(3600)
                raise
        setattr(dist, name, deaf)


def share_outcome(from_pretrained, events_dir):
    """The fix proposed in README.md, applied around `from_pretrained` here: with FSDP `cpu_ram_efficient_loading`
    global rank 0 alone reads and converts the weights, so it alone can fail on them; every rank learns rank 0's
    outcome (one `broadcast_object_list` from rank 0) and raises too, instead of waiting for rank 0 in `prepare`."""
    import torch.distributed as dist

    def shared(*args, **kwargs):
        error = None
        try:
            return from_pretrained(*args, **kwargs)
        except Exception as e:
            error = e
            raise
        finally:
            outcome = [None if error is None else f"{type(error).__name__}: {error}"]
            dist.broadcast_object_list(outcome, src=0)
            if error is None and outcome[0] is not None:
                event(events_dir, "rank0_failed", error=outcome[0][:200])
                raise RuntimeError(f"global rank 0 failed to load the checkpoint (see its log): {outcome[0]}")
    return shared


def run_worker(checkpoint, events_dir):
    import faulthandler

    rank = os.environ["RANK"]
    # Where a rank is when torchrun terminates it (SIGTERM, then the default action) or when the harness gives up
    # (SIGUSR1): its Python stack goes to a file of its own, not to what the user sees
    stacks = open(os.path.join(events_dir, f"rank{rank}.stack.txt"), "w", encoding="utf-8")
    faulthandler.register(signal.SIGTERM, file=stacks, all_threads=True, chain=True)
    faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True, chain=False)
    event(events_dir, "start")
    try:
        import torch
        from accelerate import Accelerator, FullyShardedDataParallelPlugin
        from accelerate.state import PartialState
        from accelerate.utils import DistributedType

        from transformers import Qwen3MoeForCausalLM

        fsdp_plugin = FullyShardedDataParallelPlugin(fsdp_version=2, cpu_ram_efficient_loading=True)
        accelerator = Accelerator(cpu=True, fsdp_plugin=fsdp_plugin)
        accelerator.state.fsdp_plugin = fsdp_plugin
        accelerator.state.distributed_type = PartialState().distributed_type = DistributedType.FSDP
        case, *flags = os.environ["HEADROOM_CASE"].split("+")
        inject(case, events_dir)
        if "deaf" in flags:
            deafen(events_dir)
        if "share" in flags:
            Qwen3MoeForCausalLM.from_pretrained = share_outcome(Qwen3MoeForCausalLM.from_pretrained, events_dir)
        event(events_dir, "load")
        model = Qwen3MoeForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
        event(events_dir, "prepare", meta_params=sum(p.is_meta for p in model.parameters()))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        model, optimizer = accelerator.prepare(model, optimizer)
        event(events_dir, "step")
        input_ids = torch.arange(32).view(2, 16) * 31 % model.config.vocab_size
        accelerator.backward(model(input_ids=input_ids, labels=input_ids).loss)
        optimizer.step()
        event(events_dir, "end")
        accelerator.wait_for_everyone()
        accelerator.end_training()
        event(events_dir, "done")
    except BaseException as e:
        event(events_dir, "exception", error=f"{type(e).__name__}: {e}"[:500])
        raise


def save_checkpoint(python, path):
    code = (
        "import sys, torch\n"
        "from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM\n"
        "torch.manual_seed(0)\n"
        "config = Qwen3MoeConfig(vocab_size=1024, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,\n"
        "    num_hidden_layers=2, num_experts=4, num_experts_per_tok=2, num_attention_heads=4, num_key_value_heads=2,\n"
        "    head_dim=16, tie_word_embeddings=False)\n"
        "Qwen3MoeForCausalLM(config).to(torch.bfloat16).save_pretrained(sys.argv[1])\n"
    )
    subprocess.run([python, "-c", code, str(path)], check=True)


# ---------------------------------------------------------------------------------------------------------------------
# The driver: one run = one job of one or two torchrun agents


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def agent_commands(python, layout, port, run_id):
    nnodes, rdzv = int(layout[0]), layout.split("-")[1]
    commands = []
    for node_rank in range(nnodes):
        cmd = [python, "-m", "torch.distributed.run", f"--nnodes={nnodes}", "--nproc-per-node=2"]
        if rdzv == "static":
            cmd += ["--rdzv-backend=static", f"--node-rank={node_rank}", "--master-addr=127.0.0.1",
                    f"--master-port={port}"]
        else:
            cmd += ["--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", f"--rdzv-id={run_id}"]
            if layout.endswith("c10dx"):
                # The rendezvous store on the agent that does not hold global rank 0. c10d ranks the agents by their
                # node descriptors (address, pid): agent 0, spawned first, has the lower pid and group rank 0; without
                # `is_host` the store goes to whichever agent binds the endpoint first
                cmd += [f"--rdzv-conf=is_host={node_rank}"]
        commands.append(cmd)
    return commands


def read_events(events_dir):
    records = []
    for path in sorted(Path(events_dir).glob("rank*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted(records, key=lambda r: r["t"])


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z":
            return False
    return True


ERROR_LINE = re.compile(r"(\w+(Error|Exception|Interrupt)\b[^\n]*|Signal \d+ \(SIG\w+\)[^\n]*|exitcode\s*:[^\n]*)")


def summarize_log(text):
    """The lines a user reads first: each rank's last exception line and torchrun's root cause."""
    lines = text.splitlines()
    errors = [m.group(0).strip() for line in lines for m in [ERROR_LINE.search(line)] if m]
    seen, unique = set(), []
    for line in errors:
        if line not in seen:
            seen.add(line)
            unique.append(line)
    return {"error_lines": unique[-12:], "tail": lines[-40:]}


def run_one(python, env_name, case, layout, checkpoint, out_dir, timeout):
    run_dir = out_dir / "runs" / f"{env_name}-{case}-{layout}"
    events_dir = run_dir / "events"
    events_dir.mkdir(parents=True, exist_ok=True)
    for stale in list(events_dir.iterdir()) + list(run_dir.glob("agent*.log")):
        stale.unlink()
    env = {**os.environ, "ACCELERATE_USE_FSDP": "true", "FSDP_CPU_RAM_EFFICIENT_LOADING": "true",
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HEADROOM_CASE": case,
           "PYTHONUNBUFFERED": "1"}
    port = free_port()
    agents = []
    start = time.time()
    for i, cmd in enumerate(agent_commands(python, layout, port, f"{env_name}-{case}")):
        log = open(run_dir / f"agent{i}.log", "w", encoding="utf-8")
        cmd += [__file__, "worker", str(checkpoint), str(events_dir)]
        agents.append({"proc": subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True), "log": log, "exit_s": None})
    deadline = time.monotonic() + timeout
    while any(a["proc"].poll() is None for a in agents) and time.monotonic() < deadline:
        for a in agents:
            if a["exit_s"] is None and a["proc"].poll() is not None:
                a["exit_s"] = round(time.time() - start, 1)
        time.sleep(0.1)
    for a in agents:
        if a["exit_s"] is None and a["proc"].poll() is not None:
            a["exit_s"] = round(time.time() - start, 1)
    hang = any(a["proc"].poll() is None for a in agents)
    pids = {r["pid"] for r in read_events(events_dir)}
    # Workers run in sessions of their own (torchrun starts them so): any still alive now is left behind
    left = sorted(pid for pid in pids if alive(pid))
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGUSR1)
    if left:
        time.sleep(2)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for a in agents:
        if a["proc"].poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(a["proc"].pid, signal.SIGKILL)
        a["proc"].wait()
        a["log"].close()
    events = read_events(events_dir)
    fault = next((r for r in events if r["event"] == "fault"), None)
    ranks = {}
    for r in events:
        rank = ranks.setdefault(r["rank"], {"node": r["node"], "local_rank": r["local_rank"], "pid": r["pid"]})
        rank["last_event"] = r["event"]
        if r["event"] == "exception":
            rank["exception"] = r["error"]
    for rank_id, rank in ranks.items():
        stack = events_dir / f"rank{rank_id}.stack.txt"
        text = stack.read_text(errors="replace") if stack.exists() else ""
        # The innermost frame of the main thread when it was signalled: where it was waiting
        main = text.split("Current thread")[-1] if "Current thread" in text else text
        frames = re.findall(r'File "([^"]+)", line (\d+) in (\w+)', main)
        rank["stack_top"] = [f"{Path(f).name}:{n} {fn}" for f, n, fn in frames[:4]]
    result = {
        "env": env_name, "case": case, "layout": layout, "timeout_s": timeout, "hang": hang,
        "fault_at_s": None if fault is None else round(fault["t"] - start, 1),
        "fault_rank": None if fault is None else fault["rank"],
        "faults": sorted({r["rank"] for r in events if r["event"] == "fault"}),
        "agents": [], "ranks": {str(k): v for k, v in sorted(ranks.items())}, "left_behind": left,
    }
    for i, a in enumerate(agents):
        log_text = (run_dir / f"agent{i}.log").read_text(errors="replace")
        result["agents"].append({"agent": i, "exit_code": None if hang and a["exit_s"] is None else a["proc"].returncode,
                                 "exit_s": a["exit_s"], "after_fault_s": None if (fault is None or a["exit_s"] is None)
                                 else round(a["exit_s"] - (fault["t"] - start), 1), **summarize_log(log_text)})
    return result


def describe(r):
    agents = ", ".join(
        f"agent {a['agent']}: " + ("HANG" if a["exit_s"] is None else f"exit {a['exit_code']} at {a['exit_s']} s")
        for a in r["agents"]
    )
    return agents


def table(results):
    rows = ["| env | case | layout | fault (rank, at s) | agents | ranks: last event / exception | hang |",
            "|---|---|---|---|---|---|---|"]
    for r in results:
        ranks = "; ".join(f"r{k}: {v['last_event']}" + (f" ({v['exception'][:60]})" if "exception" in v else "")
                          for k, v in r["ranks"].items())
        fault = "-" if r["fault_at_s"] is None else f"{r['faults']} at {r['fault_at_s']}"
        rows.append(f"| {r['env']} | {r['case']} | {r['layout']} | {fault} | {describe(r)} | {ranks} | "
                    f"{'HANG' if r['hang'] else 'no'} |")
    return "\n".join(rows) + "\n"


FRAME = re.compile(r'\[rank(\d+)\]:\s+File "([^"]+)", line (\d+), in (\w+)')
FAILURE = re.compile(r"rank\s*:\s*(\d+) \(local_rank: \d+\)\n\s*exitcode\s*:\s*(-?\d+)")


def rank_outcomes(r, run_dir):
    """Per rank: how it ended, where, and when (seconds after the fault), from the agents' logs and its events."""
    logs = "\n".join((run_dir / f"agent{a['agent']}.log").read_text(errors="replace") for a in r["agents"])
    frames = {}
    for rank, path, line, func in FRAME.findall(logs):
        frames.setdefault(int(rank), []).append((path, int(line), func))
    exit_codes = {int(rank): int(code) for rank, code in FAILURE.findall(logs)}
    events = read_events(run_dir / "events")
    fault_t = next((e["t"] for e in events if e["event"] == "fault"), None)
    outcomes = {}
    for key, rank in r["ranks"].items():
        k = int(key)
        mine = [e for e in events if e["rank"] == k]
        last = mine[-1] if mine else {}
        where = ""
        lib = [f for f in frames.get(k, []) if "/accelerate/" in f[0] or "/transformers/" in f[0]]
        c10d = [f for f in frames.get(k, []) if f[0].endswith("distributed_c10d.py")]
        if c10d:
            where = f"{c10d[-1][2]} in {lib[-1][2] if lib else '?'}"
        elif lib:
            where = lib[-1][2]
        stack = rank.get("stack_top") or []
        if not where and stack:
            where = "stack: " + ", ".join(stack[:2])
        error = rank.get("exception", "")
        kind = next((e.get("kind") for e in mine if e["event"] == "fault"), None)
        if kind == "SIGKILL":
            how = "SIGKILL (injected)"
        elif "Connection closed by peer" in error:
            how = "gloo: Connection closed by peer"
        elif error:
            how = error.split(" (injected")[0].split("\n")[0][:90]
        elif last.get("event") == "done":
            how = "done"
        elif k in r["left_behind"]:
            how = f"left running (in {last.get('event')}), killed by the harness"
        else:
            how = f"ended in {last.get('event')}"
        if k in exit_codes:
            how += f", exit {exit_codes[k]}"
        outcomes[k] = {"how": how, "where": where, "node": rank["node"],
                       "at_s": None if fault_t is None or not mine else round(last["t"] - fault_t, 1),
                       "peer_lost": any(e["event"] == "peer_lost" for e in mine)}
    return outcomes


def describe_run(r, run_dir):
    """One cell of the report's table."""
    if r["hang"]:
        head = "HANG (killed at %d s)" % r["timeout_s"]
    else:
        head = ""
    agents = "; ".join(
        f"agent {a['agent']} " + ("still running" if a["exit_s"] is None else
                                  f"exit {a['exit_code']} at {a['exit_s']} s"
                                  + ("" if a["after_fault_s"] is None else f" (+{a['after_fault_s']} s)"))
        for a in r["agents"])
    ranks = "; ".join(f"r{k}: {o['how']}" + (f" in {o['where']}" if o["where"] else "")
                      for k, o in sorted(rank_outcomes(r, run_dir).items()))
    return " ".join(x for x in (head, agents + ".", ranks) if x)


def report(out):
    results = json.loads((out / "results.json").read_text())
    by_key = {(x["env"], x["case"], x["layout"]): x for x in results}
    cases = sorted({x["case"] for x in results}, key=lambda c: (CASES.index(c.split("+")[0]), c))
    rows = ["| case | layout | rendezvous | official | patched |", "|---|---|---|---|---|"]
    for case in cases:
        for layout in LAYOUTS:
            cells = []
            for env_name in ("pristine", "patched"):
                r = by_key.get((env_name, case, layout))
                cells.append("not run" if r is None else describe_run(r, out / "runs" / f"{env_name}-{case}-{layout}"))
            if cells == ["not run", "not run"]:
                continue
            nodes, rdzv = layout.split("-")
            rdzv = "c10d, store on agent 1" if rdzv == "c10dx" else rdzv
            rows.append(f"| {case} | {nodes[0]} agent(s) x 2 | {rdzv} | {cells[0]} | {cells[1]} |")
    (out / "table.md").write_text("\n".join(rows) + "\n")
    outcomes = {f"{x['env']}-{x['case']}-{x['layout']}": {
        str(k): v for k, v in rank_outcomes(x, out / "runs" / f"{x['env']}-{x['case']}-{x['layout']}").items()}
        for x in results}
    (out / "outcomes.json").write_text(json.dumps(outcomes, indent=1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker")
    worker.add_argument("checkpoint")
    worker.add_argument("events_dir")
    run = sub.add_parser("run")
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--envs", default="pristine,patched")
    run.add_argument("--cases", default=",".join(CASES))
    run.add_argument("--layouts", default=",".join(LAYOUTS))
    run.add_argument("--timeout", type=int, default=180)
    run.add_argument("--work", type=Path, default=ROOT / "build" / "rank0-failures", help="where the checkpoint goes")
    rep = sub.add_parser("report", help="rewrite DIR/table.md and DIR/outcomes.json from DIR/results.json and the logs")
    rep.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "report":
        report(args.out)
        return 0
    if args.command == "worker":
        run_worker(args.checkpoint, args.events_dir)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else []
    envs = args.envs.split(",")
    checkpoint = args.work / "checkpoint"
    if not (checkpoint / "config.json").exists():
        save_checkpoint(str(ROOT / "build" / "envs" / envs[0] / "bin" / "python"), checkpoint)
    for case in args.cases.split(","):
        for layout in args.layouts.split(","):
            for env_name in envs:
                python = str(ROOT / "build" / "envs" / env_name / "bin" / "python")
                r = run_one(python, env_name, case, layout, checkpoint, args.out, args.timeout)
                print(f"{env_name:8} {case:8} {layout:11} {describe(r)}" + ("  HANG" if r["hang"] else ""), flush=True)
                results = [x for x in results if (x["env"], x["case"], x["layout"]) != (env_name, case, layout)]
                results.append(r)
                tmp = results_path.with_suffix(".tmp")
                tmp.write_text(json.dumps(results, indent=1))
                os.replace(tmp, results_path)
    order = {(e, c, l): i for i, (c, l, e) in enumerate(
        (c, l, e) for c in CASES for l in LAYOUTS for e in ("pristine", "patched"))}
    results.sort(key=lambda x: order.get((x["env"], x["case"], x["layout"]), 1 << 30))
    report(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
