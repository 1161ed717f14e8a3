# The cause, alone: 2 gloo ranks whose process group outlives destroy_process_group (HOLD=1, as under FSDP2);
# EXIT=1 leaves with os._exit(0) after destroy_process_group, as the fixed workers do. Run by repeat.sh.
import os, sys, torch, torch.distributed as dist
dist.init_process_group("gloo")
rank = dist.get_rank()
held = dist.distributed_c10d._get_default_group() if os.environ.get("HOLD") == "1" else None
t = torch.ones(1 << 16)
for _ in range(20):
    dist.all_reduce(t)
dist.barrier()
dist.destroy_process_group()
if os.environ.get("EXIT") == "1":
    sys.stdout.flush(); sys.stderr.flush(); os._exit(0)
