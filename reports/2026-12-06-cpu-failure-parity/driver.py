"""The failure table. For each case, the user's script (from_pretrained, then prepare) on
two torchrun agents x 2 ranks; per rank: what from_pretrained raised or that it entered prepare; the agents' exit
codes, the job's wall time, and whether a log holds gloo's 'Connection closed by peer'."""
import json, os, sys, tempfile
sys.path.insert(0, os.environ.get("TESTS_FSDP", "vendor/transformers/tests/fsdp"))
import test_fsdp_cpu_ram_efficient_loading as t

label = sys.argv[1]
cases = sys.argv[2].split(",")
ckpt = sys.argv[3]
env = dict(os.environ, ACCELERATE_USE_FSDP="true", FSDP_CPU_RAM_EFFICIENT_LOADING="true", OMP_NUM_THREADS="1")
for case in cases:
    out = tempfile.mkdtemp(prefix=f"{label}-{case}-", dir="/tmp/parity-table")
    import time
    codes, elapsed, logs = t.launch_two_agents(t.__file__, ["user", case, ckpt, out], env, out, stop_on_failure=False)
    ended = time.time()
    marks = [os.path.getmtime(os.path.join(out, f"{case}_rank{r}.json")) for r in range(4)
             if os.path.exists(os.path.join(out, f"{case}_rank{r}.json"))]
    after_first_record = round(ended - min(marks), 1) if marks else None
    ranks = []
    for r in range(4):
        p = os.path.join(out, f"{case}_rank{r}.json")
        if not os.path.exists(p):
            ranks.append("nothing recorded")
            continue
        res = json.load(open(p))
        ranks.append("entered prepare" if "entered_prepare" in res else res["error"][:70])
    closed = sum(log.count("Connection closed by peer") for log in logs)
    print(json.dumps({"build": label, "case": case, "exit_codes": codes, "seconds": round(elapsed, 1), "s_after_first_rank_record": after_first_record,
                      "connection_closed_lines": closed, "ranks": ranks}), flush=True)
